"""Native-batch lanes: submit a work unit as provider batches, poll them, detect stalls.

Submission is idempotent: the unit records its intent (a timestamp) before calling the
provider, and a re-run after a crash asks the adapter to adopt the provider batches it already
made for the unit instead of creating more. A provider batch whose progress has not moved for
the stall window is treated as failed for routing: it is cancelled, what it finished is kept,
and the rest moves down each item's fallback ladder (late results are recorded, never billed).
"""
from __future__ import annotations

import logging
import time

from sqlalchemy import func, select, update

from batchrouter import metrics, queue
from batchrouter.db import Database
from batchrouter.dispatch import (
    ACTIVE,
    POLL_JOB,
    Settings,
    _close_unit,
    _cooldown,
    _start_items,
    admitted,
    claim,
    complete_unit,
    record_health,
    routing_of,
    scopes,
)
from batchrouter.models import Batch, Item, WorkUnit
from batchrouter.outcomes import degrade, fail_remaining, ingest
from batchrouter.providers import classify, get_provider
from batchrouter.providers.base import build_request

log = logging.getLogger(__name__)


def submit(db: Database, unit_id: str, worker: str, settings: Settings) -> str:
    """Create the unit's provider batches (or adopt those a crashed run made), then poll."""
    with db.session() as s:
        unit = s.get(WorkUnit, unit_id)
        if admitted(settings, unit, 1) == 0:
            # Breaker open: nothing goes to this lane; items with a fallback move on.
            degrade(s, unit_id, "provider_unhealthy",
                    f"The {unit.lane} lane is unhealthy (circuit breaker open).")
            complete_unit(s, unit_id, settings, wait=_cooldown(settings, unit))
            return "lane-unhealthy"
        items = s.execute(select(Item.id, Item.line, Item.attempts).where(
            Item.work_unit_id == unit_id, Item.status.in_(ACTIVE)).order_by(Item.seq)).all()
        provider_slug, model, lane = unit.provider, unit.provider_model_id, unit.lane
        routing = routing_of(s.get(Batch, unit.batch_id))
        # Intent first, committed before the provider hears of it: a crash after the
        # provider accepted the batch is resumed by adopting it, never by a second batch.
        resume = (unit.handle or {}).get("intent_at")
        unit.handle = {"intent_at": resume or time.time()}
    if not items:
        with db.session() as s:
            complete_unit(s, unit_id, settings)
        return "completed"
    requests = [build_request(i, line, attempts + 1) for i, line, attempts in items]
    for r in requests:
        r.routing = routing
    provider = get_provider(provider_slug, settings.providers)
    try:
        with metrics.timed_provider_call(lane):
            submission = provider.submit(model, "batch", requests, tag=unit_id,
                                         resume_since=resume)
    except Exception as exc:  # noqa: BLE001 - classified: every provider failure is an outcome
        err = classify.from_exception(provider_slug, exc)
        with db.session() as s:
            unit = s.get(WorkUnit, unit_id)
            _record(settings, unit, ok=0, failed=1, err=err)
            _start_items(s, unit.batch_id, Item.work_unit_id == unit_id)
            fail_remaining(s, unit_id, err["code"], "Submitting the provider batch failed: "
                           + err["message"])
            complete_unit(s, unit_id, settings)
        return "submit-failed"
    with db.session() as s:
        unit = s.get(WorkUnit, unit_id)
        unit.handle = {**submission.handle, "submitted_at": time.time(),
                       "progress_at": time.time(), "completed": -1}
        unit.status = "submitted"
        # Free the lease: whichever worker picks up the poll job may take it.
        unit.lease_until, unit.leased_by = None, None
        _start_items(s, unit.batch_id, Item.work_unit_id == unit_id)
        queue.add_outbox(s, POLL_JOB, unit_id, delay=settings.poll_interval)
    return "submitted"


def _record(settings: Settings, unit: WorkUnit, *, ok: int, failed: int, err=None) -> None:
    """One outcome of a whole provider batch (a failed submit, a stall)."""
    if settings.health is None:
        return
    from batchrouter.health import counts_against

    for kind, scope in zip(("provider", "lane"), scopes(unit)):
        bad = failed if counts_against(err, kind) else 0
        settings.health.record((scope,), ok, bad, 0, err if bad else None)


def poll(db: Database, unit_id: str, worker: str, settings: Settings) -> str:
    """Poll a submitted provider batch; ingest its results when done, else poll again later."""
    with db.session() as s:
        unit = s.get(WorkUnit, unit_id)
        if unit is None or unit.status != "submitted":
            return "not-submitted"
        if not claim(s, unit_id, worker, settings.lease_seconds, run=False):
            return "not-claimed"
        handle, slug, lane = dict(unit.handle), unit.provider, unit.lane
        stopping = s.get(Batch, unit.batch_id).cancel_requested_at is not None
        left = s.scalar(select(func.count()).select_from(Item).where(
            Item.work_unit_id == unit_id, Item.status.in_(ACTIVE)))
    provider = get_provider(slug, settings.providers)
    if not left and not stopping:
        # Every item moved on (the hybrid tail rule): the provider batch is not needed.
        _cancel_quietly(provider, handle, unit_id)
        with db.session() as s:
            complete_unit(s, unit_id, settings)
        return "abandoned"
    if stopping:
        provider.cancel(handle)
        with db.session() as s:
            _close_unit(s, s.get(WorkUnit, unit_id), "cancelled")
        return "cancelled"
    try:
        with metrics.timed_provider_call(lane):
            result = provider.poll(handle)
    except Exception as exc:  # noqa: BLE001 - a failed poll is retried; stall detection bounds it
        log.warning("poll of unit %s failed: %s", unit_id, exc)
        result = None
    with db.session() as s:
        unit = s.get(WorkUnit, unit_id)
        if result is None or result.status == "running":
            return _still_running(s, provider, unit, result, settings)
        if result.results:
            record_health(settings, unit, result.results)
            ingest(s, unit_id, result.results)
        if result.status in ("failed", "expired", "cancelled"):
            # The lane let these items down as a whole: they move on rather than wait for
            # another round on it.
            fail_remaining(s, unit_id, f"provider_batch_{result.status}",
                           f"The provider batch {result.status} before this item finished.",
                           degraded=True)
        complete_unit(s, unit_id, settings)
    return "completed"


def _still_running(session, provider, unit: WorkUnit, result, settings: Settings) -> str:
    """Note progress; a provider batch that has not moved for the stall window is abandoned:
    cancelled, its items re-routed (results it still delivers later are recorded, unbilled)."""
    now = time.time()
    handle = dict(unit.handle)
    done = (result.progress or {}).get("completed", 0) if result else handle["completed"]
    if done != handle.get("completed"):
        handle.update(completed=done, progress_at=now)
    handle["polled_at"] = now
    unit.handle = handle
    if now - handle["progress_at"] < settings.stall_seconds:
        session.execute(update(WorkUnit).where(WorkUnit.id == unit.id)
                        .values(lease_until=None, leased_by=None))
        queue.add_outbox(session, POLL_JOB, unit.id, delay=settings.poll_interval)
        return "running"
    log.warning("provider batch of unit %s stalled at %s done", unit.id, done)
    _cancel_quietly(provider, handle, unit.id)
    err = {"code": "provider_stalled", "retryable": True, "provider": unit.provider,
           "message": f"No progress for {int(settings.stall_seconds)} s."}
    _record(settings, unit, ok=0, failed=1, err=err)
    fail_remaining(session, unit.id, "provider_stalled",
                   f"The provider batch made no progress for {int(settings.stall_seconds)} s; "
                   "re-routed.", degraded=True)
    complete_unit(session, unit.id, settings)
    return "stalled"


def _cancel_quietly(provider, handle: dict, unit_id: str) -> None:
    try:
        provider.cancel(handle)
    except Exception:  # noqa: BLE001 - best effort; its late results are ignored anyway
        log.warning("could not cancel the provider batch of unit %s", unit_id)
