"""Dispatch, poll and finalize jobs: take ids, call one domain function (DESIGN §1)."""
from __future__ import annotations

from sqlalchemy import select

from batchrouter import dispatch, finalize, health, logs, notifications, provider_config, queue
from batchrouter.models import Batch, WorkUnit
from batchrouter.providers import ProviderSettings, get_provider
from jobs import runtime


def _log_context(unit_id: str | None = None, batch_id: str | None = None) -> None:
    """Tag this job's log lines with its batch and workspace."""
    with runtime.runtime().db.session() as s:
        stmt = select(Batch.id, Batch.workspace_id)
        stmt = stmt.join(WorkUnit, WorkUnit.batch_id == Batch.id).where(WorkUnit.id == unit_id) \
            if unit_id else stmt.where(Batch.id == batch_id)
        row = s.execute(stmt).first()
    if row is not None:
        logs.bind(batch_id=row.id, workspace_id=row.workspace_id)


def breaker_health() -> health.Health:
    """The Redis-shared breakers with the configured policy."""
    cfg = runtime.config()
    return health.Health(runtime.runtime().redis, health.policy_from(cfg))


def settings() -> dispatch.Settings:
    cfg = runtime.config()
    rt = runtime.runtime()
    with rt.db.session() as session:
        connections = provider_config.connections(session, cfg)
        rates = provider_config.rate_limits(session)
    return dispatch.Settings(
        lease_seconds=cfg["BATCHROUTER_UNIT_LEASE"], poll_interval=cfg["BATCHROUTER_POLL_INTERVAL"],
        retry_base_delay=cfg["BATCHROUTER_RETRY_BASE_DELAY"],
        providers=ProviderSettings(sandbox_latency_ms=cfg["BATCHROUTER_SANDBOX_LATENCY_MS"],
                                   sandbox_failure_rate=cfg["BATCHROUTER_SANDBOX_FAILURE_RATE"],
                                   sandbox_batch_delay=cfg["BATCHROUTER_SANDBOX_BATCH_DELAY"],
                                   sandbox_state_dir=cfg["BATCHROUTER_STORAGE_ROOT"],
                                   connections=connections,
                                   concurrency=cfg["BATCHROUTER_LANE_CONCURRENCY"],
                                   timeout=cfg["BATCHROUTER_PROVIDER_TIMEOUT"],
                                   transport=cfg["BATCHROUTER_SYNC_TRANSPORT"]),
        health=breaker_health(), rates=rates,
        stall_seconds=cfg["BATCHROUTER_STALL_WINDOW"])


def run_work_unit(unit_id: str) -> str:
    _log_context(unit_id=unit_id)
    return dispatch.run_unit(runtime.runtime().db, unit_id, queue.worker_name(), settings())


def poll_work_unit(unit_id: str) -> str:
    _log_context(unit_id=unit_id)
    return dispatch.poll_unit(runtime.runtime().db, unit_id, queue.worker_name(), settings())


def finalize_batch(batch_id: str) -> str | None:
    _log_context(batch_id=batch_id)
    rt = runtime.runtime()
    provider_settings = settings().providers

    def cancel_submitted(unit) -> None:
        get_provider(unit.provider, provider_settings).cancel(unit.handle)

    with rt.db.session() as session:
        status = finalize.finalize(session, rt.storage, batch_id, cancel_submitted)
        notifications.batch_finished(session, batch_id, status, runtime.config()["BASE_URL"])
        return status
