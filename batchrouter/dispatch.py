"""Running work units: lease, call the provider, record results, retry, fall back, settle.

Sync lanes run here; native-batch lanes live in native.py, what a result does to an item in
outcomes.py, provider health (breakers, rate limits) in health.py.

Every step is safe to repeat. A worker owns a unit while its lease holds (renewed per chunk);
item writes only touch items that are not yet terminal, and counters move by what was actually
written, so a unit re-run after a crash finishes the remaining items exactly once. Settlement
is one ledger transaction per unit, keyed by the unit id.
"""
from __future__ import annotations

import logging
import random
from contextlib import closing
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from batchrouter import ledger, metrics, queue
from batchrouter.batches import DISPATCH_JOB, FINALIZE_JOB
from batchrouter.db import Database, utcnow
from batchrouter.models import Batch, Item, WorkUnit
from batchrouter.models.batches import BATCH_TERMINAL
from batchrouter.outcomes import ACTIVE, degrade, ingest
from batchrouter.providers import ProviderSettings, get_provider
from batchrouter.providers.base import build_request

log = logging.getLogger(__name__)
POLL_JOB = "jobs.dispatch.poll_work_unit"
CHUNK = 100
BACKOFF_CAP = 300.0


@dataclass(frozen=True)
class Settings:
    lease_seconds: int = 120
    poll_interval: float = 2.0
    retry_base_delay: float = 2.0  # retries wait up to this × 2^(run-1), full jitter
    providers: ProviderSettings = field(default_factory=ProviderSettings)
    health: object = None  # health.Health (Redis) or None: no breakers, no rate limits
    rates: dict = field(default_factory=dict)  # provider slug -> (requests/min, tokens/min)
    stall_seconds: float = 3600.0  # a provider batch with no progress this long has stalled


# --- leases ----------------------------------------------------------------------------------

def claim(session: Session, unit_id: str, worker: str, seconds: int, *,
          run: bool = True) -> bool:
    """Take (or renew) the unit's lease; False when another worker holds it. Only runs count
    as attempts (`run`); polls of a provider batch do not, so backoff does not grow with them."""
    now = utcnow()
    won = session.execute(
        update(WorkUnit)
        .where(WorkUnit.id == unit_id, WorkUnit.status.in_(("pending", "running", "submitted")),
               (WorkUnit.lease_until.is_(None)) | (WorkUnit.lease_until < now)
               | (WorkUnit.leased_by == worker))
        .values(lease_until=now + timedelta(seconds=seconds), leased_by=worker,
                attempts=WorkUnit.attempts + int(run), updated_at=now)).rowcount
    return won == 1


def renew(session: Session, unit_id: str, worker: str, seconds: int) -> bool:
    now = utcnow()
    return session.execute(
        update(WorkUnit).where(WorkUnit.id == unit_id, WorkUnit.leased_by == worker,
                               WorkUnit.status.in_(("pending", "running", "submitted")))
        .values(lease_until=now + timedelta(seconds=seconds), updated_at=now)).rowcount == 1


# --- running a unit --------------------------------------------------------------------------

def run_unit(db: Database, unit_id: str, worker: str, settings: Settings) -> str:
    """Dispatch one work unit; returns what happened (for logs and tests)."""
    with db.session() as s:
        if not claim(s, unit_id, worker, settings.lease_seconds):
            return "not-claimed"
        unit = s.get(WorkUnit, unit_id)
        batch = s.get(Batch, unit.batch_id)
        if batch.status in BATCH_TERMINAL or batch.cancel_requested_at:
            _close_unit(s, unit, "cancelled")
            return "batch-stopped"
        if _past_deadline(batch):
            queue.add_outbox(s, FINALIZE_JOB, batch.id)  # expires what is left
            return "deadline-passed"
        if unit.status == "submitted":
            return "already-submitted"
        _mark_started(s, batch, unit)
        mode = unit.mode
    if mode == "batch":
        from batchrouter import native

        return native.submit(db, unit_id, worker, settings)
    return _run_sync(db, unit_id, worker, settings)


def _past_deadline(batch: Batch) -> bool:
    """The SLA deadline passed: nothing more is dispatched; finalize expires the rest."""
    return batch.sla_deadline <= utcnow()


def _mark_started(session: Session, batch: Batch, unit: WorkUnit) -> None:
    if batch.started_at is None:
        batch.started_at = utcnow()
    if batch.status in ("queued", "routing", "dispatched"):
        batch.status = "processing"
    if unit.status == "pending":
        unit.status = "running" if unit.mode == "sync" else unit.status


def routing_of(batch: Batch) -> dict:
    """The batch's provider preferences in OpenRouter's `provider` shape (non-empty only)."""
    prefs = (batch.controls or {}).get("provider_preferences") or {}
    out = {k: prefs[k] for k in ("order", "only", "ignore") if prefs.get(k)}
    if prefs.get("allow_fallbacks") is False:
        out["allow_fallbacks"] = False
    if prefs.get("data_collection") == "deny":
        out["data_collection"] = "deny"
    if prefs.get("zdr"):
        out["zdr"] = True
    return out


def scopes(unit: WorkUnit) -> tuple[str, str]:
    """Where health is kept for a unit's calls: its provider and its lane."""
    return unit.provider, unit.lane


def admitted(settings: Settings, unit: WorkUnit, wanted: int) -> int:
    """How many calls the breakers of the unit's provider and lane let through now."""
    if settings.health is None:
        return wanted
    return min(settings.health.allow(scope, wanted) for scope in scopes(unit))


def record_health(settings: Settings, unit: WorkUnit, results) -> None:
    """Feed a chunk's outcomes to the breakers and the metrics."""
    if settings.health is None or not results:
        return
    from batchrouter.health import counts_against

    ok = sum(1 for r in results if r.ok)
    latency = sum(r.latency_ms for r in results)
    for kind, scope in zip(("provider", "lane"), scopes(unit)):
        bad = [r for r in results if not r.ok and counts_against(r.error, kind)]
        settings.health.record((scope,), ok, len(bad), latency, bad[-1].error if bad else None)


def _throttle(settings: Settings, unit: WorkUnit, requests: list) -> float:
    """Seconds to wait before this chunk fits the provider's per-minute limits."""
    rpm, tpm = settings.rates.get(unit.provider, (0, 0))
    if settings.health is None or not (rpm or tpm):
        return 0.0
    tokens = sum(len(r.body.__repr__()) // 4 for r in requests)
    return settings.health.take(unit.provider, len(requests), tokens, rpm, tpm)


def _run_sync(db: Database, unit_id: str, worker: str, settings: Settings) -> str:
    """Run the unit's items in chunks; each item at most once per run (retries wait for the
    next run, which complete_unit schedules with backoff)."""
    after, wait = -1, 0.0
    while True:
        with db.session() as s:
            if not renew(s, unit_id, worker, settings.lease_seconds):
                return "lease-lost"
            unit = s.get(WorkUnit, unit_id)
            batch = s.get(Batch, unit.batch_id)
            if batch.cancel_requested_at:
                return "cancelling"
            if _past_deadline(batch):
                queue.add_outbox(s, FINALIZE_JOB, batch.id)
                return "deadline-passed"
            provider = get_provider(unit.provider, settings.providers)
            size = chunk_size(settings, unit, streams=hasattr(provider, "stream"))
            allowed = admitted(settings, unit, size)
            if allowed == 0:
                # Breaker open: items with a fallback move on; the others wait it out.
                degrade(s, unit_id, "provider_unhealthy",
                        f"The {unit.lane} lane is unhealthy (circuit breaker open).")
                wait = max(wait, _cooldown(settings, unit))
                break
            chunk = _take_chunk(s, unit, after, allowed)  # a chunk keeps the lane busy
            routing = routing_of(batch)
            requests = [build_request(item_id, line, attempts + 1)
                        for _seq, item_id, line, attempts in chunk]
            for r in requests:
                r.routing = routing
            wait = _throttle(settings, unit, requests) if chunk else 0.0
            if wait:
                _unstart(s, unit.batch_id, [r.item_id for r in requests])
                break
            unit_row = unit
        if not chunk:
            break
        after = chunk[-1][0]
        with closing(_results_as_they_finish(provider, unit_row, requests)) as batches:
            for results in batches:  # the next calls stay in flight while these are written
                metrics.provider_results(unit_row.lane, results)
                record_health(settings, unit_row, results)
                with db.session() as s:
                    if not renew(s, unit_id, worker, settings.lease_seconds):
                        return "lease-lost"  # closing() cancels the calls still running
                    ingest(s, unit_id, results)
        if allowed < size and len(chunk) >= allowed:
            break  # half-open: the probes went; the rest waits for their verdict
    with db.session() as s:
        complete_unit(s, unit_id, settings, wait=wait)
    return "completed"


def chunk_size(settings: Settings, unit: WorkUnit, *, streams: bool) -> int:
    """Items taken (and marked running) at once. When results stream back while the lane's
    window stays full, a chunk spans several windows; under a per-minute rate limit, or when
    the whole chunk comes back at once (sandbox), it is one window: the limiter sees the calls
    about when they go out, and each write stays short."""
    windows = 8 if streams and not any(settings.rates.get(unit.provider, ())) else 1
    return min(1000, max(CHUNK, windows * settings.providers.concurrency))


def _results_as_they_finish(provider, unit: WorkUnit, requests: list):
    """Lists of results as the calls finish (a streaming adapter), else the whole chunk."""
    with metrics.timed_provider_call(unit.lane, count_success=False):
        if hasattr(provider, "stream"):
            yield from provider.stream(unit.provider_model_id, requests,
                                       max(CHUNK, provider.concurrency))
        else:
            yield provider.submit(unit.provider_model_id, "sync", requests).results


def _cooldown(settings: Settings, unit: WorkUnit) -> float:
    return max(settings.health.cooldown_left(scope) for scope in scopes(unit)) + 0.5


def _unstart(session: Session, batch_id: str, item_ids: list[str]) -> None:
    """Running items that did not go out (throttled) go back to pending."""
    moved = session.execute(update(Item).where(Item.id.in_(item_ids), Item.status == "running")
                            .values(status="pending")).rowcount
    session.execute(update(Batch).where(Batch.id == batch_id)
                    .values(pending=Batch.pending + moved, running=Batch.running - moved))


def _take_chunk(session: Session, unit: WorkUnit, after: int, limit: int = CHUNK) -> list:
    """The next items of the unit still to run (keyset on seq); marks them running."""
    rows = session.execute(select(Item.seq, Item.id, Item.line, Item.status, Item.attempts)
                           .where(Item.work_unit_id == unit.id, Item.status.in_(ACTIVE),
                                  Item.seq > after)
                           .order_by(Item.seq).limit(limit)).all()
    pending = [r.id for r in rows if r.status == "pending"]
    if pending:
        _start_items(session, unit.batch_id, Item.id.in_(pending))
    return [(r.seq, r.id, r.line, r.attempts) for r in rows]


def _start_items(session: Session, batch_id: str, which) -> None:
    """Pending items matching `which` become running; the batch counters move with them."""
    moved = session.execute(update(Item).where(which, Item.status == "pending")
                            .values(status="running")).rowcount
    session.execute(update(Batch).where(Batch.id == batch_id)
                    .values(pending=Batch.pending - moved, running=Batch.running + moved))



# --- completion ------------------------------------------------------------------------------

def complete_unit(session: Session, unit_id: str, settings: Settings, *,
                  wait: float = 0.0) -> None:
    """Close a unit whose items are all done or moved; settle it once; maybe finalize."""
    unit = session.get(WorkUnit, unit_id)
    left = session.execute(select(Item.error).where(
        Item.work_unit_id == unit_id, Item.status.in_(ACTIVE))).scalars().all()
    if left:
        # Transient failures went back to pending: run the unit again after a backoff that
        # honours the longest Retry-After the provider sent for them.
        hint = max([(e or {}).get("retry_after") or 0 for e in left] + [wait])
        unit.lease_until, unit.leased_by, unit.status = None, None, "pending"
        unit.handle = None
        queue.add_outbox(session, DISPATCH_JOB, unit_id,
                         delay=backoff(unit.attempts, settings, hint))
        return
    _close_unit(session, unit, "completed")


def backoff(runs: int, settings: Settings, retry_after: float = 0) -> float:
    """Full-jitter exponential backoff (capped at 5 minutes), never before Retry-After, so
    retries of many units spread out instead of arriving together."""
    ceiling = min(BACKOFF_CAP, settings.retry_base_delay * (2 ** max(0, runs - 1)))
    return max(retry_after, random.uniform(0, ceiling))


def _close_unit(session: Session, unit: WorkUnit, status: str, *,
                finalize: bool = True) -> None:
    """Terminal status for a unit: settle what its items cost (once), count it done."""
    if unit.status in ("completed", "cancelled", "expired"):
        return
    unit.status, unit.lease_until, unit.leased_by = status, None, None
    batch = session.get(Batch, unit.batch_id)
    if batch.mode == "live" and not unit.settled:
        amount = session.scalar(select(func.coalesce(func.sum(Item.charged_micros), 0))
                                .where(Item.work_unit_id == unit.id,
                                       Item.status == "succeeded"))
        ledger.settle(session, batch.workspace_id, batch.id, unit.id, int(amount))
        unit.settled = True
    session.execute(update(Batch).where(Batch.id == batch.id)
                    .values(units_done=Batch.units_done + 1))
    session.flush()
    session.refresh(batch, ["units_done", "units_total"])
    if finalize and batch.units_done >= batch.units_total:
        queue.add_outbox(session, FINALIZE_JOB, batch.id)


def poll_unit(db: Database, unit_id: str, worker: str, settings: Settings) -> str:
    """Poll a submitted provider batch (native.poll; kept here for the job module)."""
    from batchrouter import native

    return native.poll(db, unit_id, worker, settings)
