"""Dispatch, poll and finalize jobs: take ids, call one domain function (DESIGN §1)."""
from __future__ import annotations

from batchrouter import dispatch, finalize, queue
from batchrouter.providers import ProviderSettings, get_provider
from jobs import runtime


def settings() -> dispatch.Settings:
    cfg = runtime.config()
    return dispatch.Settings(
        lease_seconds=cfg["BATCHROUTER_UNIT_LEASE"], poll_interval=cfg["BATCHROUTER_POLL_INTERVAL"],
        retry_base_delay=cfg["BATCHROUTER_RETRY_BASE_DELAY"],
        providers=ProviderSettings(sandbox_latency_ms=cfg["BATCHROUTER_SANDBOX_LATENCY_MS"],
                                   sandbox_failure_rate=cfg["BATCHROUTER_SANDBOX_FAILURE_RATE"],
                                   sandbox_batch_delay=cfg["BATCHROUTER_SANDBOX_BATCH_DELAY"],
                                   sandbox_state_dir=cfg["BATCHROUTER_STORAGE_ROOT"]))


def run_work_unit(unit_id: str) -> str:
    return dispatch.run_unit(runtime.runtime().db, unit_id, queue.worker_name(), settings())


def poll_work_unit(unit_id: str) -> str:
    return dispatch.poll_unit(runtime.runtime().db, unit_id, queue.worker_name(), settings())


def finalize_batch(batch_id: str) -> str | None:
    rt = runtime.runtime()
    provider_settings = settings().providers

    def cancel_submitted(unit) -> None:
        get_provider(unit.provider, provider_settings).cancel(unit.handle)

    with rt.db.session() as session:
        return finalize.finalize(session, rt.storage, batch_id, cancel_submitted)
