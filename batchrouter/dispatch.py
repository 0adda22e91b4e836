"""Running work units: lease, call the provider, record results, retry, fall back, settle.

Every step is safe to repeat. A worker owns a unit while its lease holds (renewed per chunk);
item writes only touch items that are not yet terminal, and counters move by what was actually
written, so a unit re-run after a crash finishes the remaining items exactly once. Settlement
is one ledger transaction per unit, keyed by the unit id.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from batchrouter import ledger, metrics, money, pricing, queue
from batchrouter.batches import DISPATCH_JOB, FINALIZE_JOB
from batchrouter.db import Database, utcnow
from batchrouter.ids import new_id
from batchrouter.models import Batch, Item, Quote, WorkUnit
from batchrouter.models.batches import BATCH_TERMINAL
from batchrouter.providers import ProviderSettings, get_provider
from batchrouter.providers.base import ItemResult, build_request, error

log = logging.getLogger(__name__)
POLL_JOB = "jobs.dispatch.poll_work_unit"
MAX_ATTEMPTS = 8  # per item, across lanes (SPEC §5)
ATTEMPTS_PER_LANE = 3
CHUNK = 100
ACTIVE = ("pending", "running")


@dataclass(frozen=True)
class Settings:
    lease_seconds: int = 120
    poll_interval: float = 2.0
    retry_base_delay: float = 2.0  # first retry after ~this; doubles per run, jittered
    providers: ProviderSettings = ProviderSettings()


@dataclass
class LockedLane:
    """A lane of the quote with the rates it locked (integers)."""

    index: int
    name: str
    provider: str
    model: str
    mode: str
    offering_id: int
    provider_model_id: str
    input_rate: int
    output_rate: int
    discount_ppm: int


def locked_lanes(quote: Quote) -> dict[int, LockedLane]:
    return {lane["index"]: LockedLane(
        lane["index"], lane["lane"], lane["provider"], lane["model"], lane["mode"],
        lane["offering_id"], lane["provider_model_id"], money.parse(lane["input_per_mtok"]),
        money.parse(lane["output_per_mtok"]), money.parse(lane["batch_discount"]))
        for lane in quote.lanes}


# --- leases ----------------------------------------------------------------------------------

def claim(session: Session, unit_id: str, worker: str, seconds: int) -> bool:
    """Take (or renew) the unit's lease; False when another worker holds it."""
    now = utcnow()
    won = session.execute(
        update(WorkUnit)
        .where(WorkUnit.id == unit_id, WorkUnit.status.in_(("pending", "running", "submitted")),
               (WorkUnit.lease_until.is_(None)) | (WorkUnit.lease_until < now)
               | (WorkUnit.leased_by == worker))
        .values(lease_until=now + timedelta(seconds=seconds), leased_by=worker,
                attempts=WorkUnit.attempts + 1, updated_at=now)).rowcount
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
        return _submit_native(db, unit_id, worker, settings)
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


def _run_sync(db: Database, unit_id: str, worker: str, settings: Settings) -> str:
    """Run the unit's items in chunks; each item at most once per run (retries wait for the
    next run, which complete_unit schedules with backoff)."""
    after = -1
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
            chunk = _take_chunk(s, unit, after)
            provider_slug, model, lane = unit.provider, unit.provider_model_id, unit.lane
        if not chunk:
            break
        after = chunk[-1][0]
        provider = get_provider(provider_slug, settings.providers)
        requests = [build_request(item_id, line, attempts + 1)
                    for _seq, item_id, line, attempts in chunk]
        with metrics.timed_provider_call(lane, count_success=False):
            submission = provider.submit(model, "sync", requests)
        metrics.provider_results(lane, submission.results)
        with db.session() as s:
            if not renew(s, unit_id, worker, settings.lease_seconds):
                return "lease-lost"
            ingest(s, unit_id, submission.results)
    with db.session() as s:
        complete_unit(s, unit_id, settings)
    return "completed"


def _take_chunk(session: Session, unit: WorkUnit, after: int) -> list[tuple]:
    """The next items of the unit still to run (keyset on seq); marks them running."""
    rows = session.execute(select(Item.seq, Item.id, Item.line, Item.status, Item.attempts)
                           .where(Item.work_unit_id == unit.id, Item.status.in_(ACTIVE),
                                  Item.seq > after)
                           .order_by(Item.seq).limit(CHUNK)).all()
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


def _submit_native(db: Database, unit_id: str, worker: str, settings: Settings) -> str:
    """Native batch lane: create the provider batch, then poll it until it is done."""
    with db.session() as s:
        unit = s.get(WorkUnit, unit_id)
        items = s.execute(select(Item.id, Item.line, Item.attempts).where(
            Item.work_unit_id == unit_id, Item.status.in_(ACTIVE)).order_by(Item.seq)).all()
        provider_slug, model, lane = unit.provider, unit.provider_model_id, unit.lane
    provider = get_provider(provider_slug, settings.providers)
    with metrics.timed_provider_call(lane):
        submission = provider.submit(model, "batch", [build_request(i, line, attempts + 1)
                                                      for i, line, attempts in items])
    with db.session() as s:
        unit = s.get(WorkUnit, unit_id)
        unit.handle, unit.status = submission.handle, "submitted"
        # Free the lease: whichever worker picks up the poll job may take it.
        unit.lease_until, unit.leased_by = None, None
        _start_items(s, unit.batch_id, Item.work_unit_id == unit_id)
        queue.add_outbox(s, POLL_JOB, unit_id, delay=settings.poll_interval)
    return "submitted"


def poll_unit(db: Database, unit_id: str, worker: str, settings: Settings) -> str:
    """Poll a submitted provider batch; ingest its results when done, else poll again later."""
    with db.session() as s:
        unit = s.get(WorkUnit, unit_id)
        if unit is None or unit.status != "submitted":
            return "not-submitted"
        if not claim(s, unit_id, worker, settings.lease_seconds):
            return "not-claimed"
        handle, slug, lane = unit.handle, unit.provider, unit.lane
        stopping = s.get(Batch, unit.batch_id).cancel_requested_at is not None
    provider = get_provider(slug, settings.providers)
    if stopping:
        provider.cancel(handle)
        with db.session() as s:
            _close_unit(s, s.get(WorkUnit, unit_id), "cancelled")
        return "cancelled"
    with metrics.timed_provider_call(lane):
        result = provider.poll(handle)
    with db.session() as s:
        if result.status == "running":
            s.execute(update(WorkUnit).where(WorkUnit.id == unit_id)
                      .values(lease_until=None, leased_by=None))
            queue.add_outbox(s, POLL_JOB, unit_id, delay=settings.poll_interval)
            return "running"
        if result.results:
            ingest(s, unit_id, result.results)
        if result.status in ("failed", "expired"):
            _fail_remaining(s, unit_id, result.status)
        complete_unit(s, unit_id, settings)
    return "completed"


# --- results ---------------------------------------------------------------------------------

def _price(lane: LockedLane, usage: dict, fee_ppm: int) -> tuple[int, int]:
    sub, fee = pricing.price(usage.get("input_tokens", 0), usage.get("output_tokens", 0),
                             lane.input_rate, lane.output_rate, lane.discount_ppm, fee_ppm)
    return sub + fee, sub


def _result_line(item: Item, lane: LockedLane, result: ItemResult, charged: int) -> str:
    return json.dumps({
        "customer_item_id": item.customer_item_id, "status": "succeeded",
        "model": lane.model, "provider": lane.provider, "lane": lane.name,
        "output": result.output, "usage": result.usage,
        "cost_usd": money.to_wire(charged), "response": result.response},
        separators=(",", ":"))


def ingest(session: Session, unit_id: str, results: list[ItemResult]) -> None:
    """Record a chunk of results: successes are priced and kept; failures retry or fall back."""
    unit = session.get(WorkUnit, unit_id)
    batch = session.get(Batch, unit.batch_id)
    quote = session.get(Quote, batch.quote_id)
    lanes = locked_lanes(quote)
    by_id = {r.item_id: r for r in results}
    items = session.scalars(select(Item).where(Item.id.in_(list(by_id)),
                                               Item.status.in_(ACTIVE))).all()
    delta = {"succeeded": 0, "failed": 0, "running": 0, "pending": 0}
    money_delta = {"settled": 0, "subtotal": 0, "provider": 0}
    for item in items:
        result = by_id[item.id]
        ran_on = lanes[item.lane]
        quoted = lanes[item.quoted_lane]
        attempt = _attempt_entry(item, ran_on, result, quote.fee_ppm)
        item.attempt_log = item.attempt_log + [attempt]
        item.attempts += 1
        was = item.status
        if result.ok:
            # Settled at the rates of the lane the item was quoted on, capped at its high.
            charged, subtotal = _price(quoted, result.usage, quote.fee_ppm)
            charged = min(charged, item.high_micros)
            subtotal = min(subtotal, charged)
            provider_cost = result.reported_cost_micros if result.reported_cost_micros \
                is not None else pricing.subtotal(
                    result.usage.get("input_tokens", 0), result.usage.get("output_tokens", 0),
                    ran_on.input_rate, ran_on.output_rate, ran_on.discount_ppm)
            item.status, item.finished_at = "succeeded", utcnow()
            item.result = _result_line(item, ran_on, result, charged)
            item.input_tokens = result.usage.get("input_tokens", 0)
            item.output_tokens = result.usage.get("output_tokens", 0)
            item.charged_micros, item.charged_subtotal_micros = charged, subtotal
            item.provider_cost_micros = provider_cost
            item.error = None
            delta["succeeded"] += 1
            money_delta["settled"] += charged
            money_delta["subtotal"] += subtotal
            money_delta["provider"] += provider_cost
        else:
            outcome = _after_failure(session, item, unit, result)
            if outcome == "failed":
                delta["failed"] += 1
            elif outcome == "moved":
                delta["pending"] += 1
            else:
                delta["pending"] += 1  # retried on this lane: back to pending for the chunker
        delta["running"] -= was == "running"
        delta["pending"] -= was == "pending"
    session.execute(update(Batch).where(Batch.id == batch.id).values(
        succeeded=Batch.succeeded + delta["succeeded"], failed=Batch.failed + delta["failed"],
        running=Batch.running + delta["running"], pending=Batch.pending + delta["pending"],
        settled_micros=Batch.settled_micros + money_delta["settled"],
        settled_subtotal_micros=Batch.settled_subtotal_micros + money_delta["subtotal"],
        settled_fee_micros=Batch.settled_fee_micros
        + money_delta["settled"] - money_delta["subtotal"],
        provider_cost_micros=Batch.provider_cost_micros + money_delta["provider"],
        updated_at=utcnow()))


def _attempt_entry(item: Item, lane: LockedLane, result: ItemResult, fee_ppm: int) -> dict:
    entry = {"attempt": item.attempts + 1, "lane": lane.name,
             "provider_request_id": result.provider_request_id, "at": utcnow().isoformat() + "Z",
             "latency_ms": result.latency_ms, "usage": result.usage,
             "outcome": "succeeded" if result.ok else "failed"}
    if result.ok:
        entry["our_price"] = money.to_wire(_price(lane, result.usage, fee_ppm)[0])
        if result.reported_cost_micros is not None:
            entry["provider_cost"] = money.to_wire(result.reported_cost_micros)
    else:
        entry["error"] = result.error
    return entry


def _after_failure(session: Session, item: Item, unit: WorkUnit, result: ItemResult) -> str:
    """Retry on this lane, move down the fallback ladder, or fail (SPEC §5)."""
    err = result.error or error("provider_error", "The provider returned no result.",
                                retryable=True)
    on_this_lane = sum(1 for a in item.attempt_log if a["lane"] == unit.lane)
    if item.attempts >= MAX_ATTEMPTS:
        return _fail_item(item, err)
    if err.get("retryable") and on_this_lane < ATTEMPTS_PER_LANE:
        item.status, item.error = "pending", err
        return "retry"
    if item.ladder:
        next_lane, rest = item.ladder[0], item.ladder[1:]
        item.lane, item.ladder, item.status, item.error = next_lane, rest, "pending", err
        item.work_unit_id = _fallback_unit(session, unit, next_lane)
        unit.item_count -= 1  # the item now counts on the fallback lane only
        return "moved"
    return _fail_item(item, err)


def _fail_item(item: Item, err: dict) -> str:
    item.status, item.error, item.finished_at = "failed", err, utcnow()
    return "failed"


def _fallback_unit(session: Session, unit: WorkUnit, lane_index: int) -> str:
    """The pending fallback unit of this batch for a lane (created once, then reused)."""
    batch = session.get(Batch, unit.batch_id)
    lane = locked_lanes(session.get(Quote, batch.quote_id))[lane_index]
    existing = session.scalars(select(WorkUnit).where(
        WorkUnit.batch_id == batch.id, WorkUnit.lane == lane.name,
        WorkUnit.status == "pending", WorkUnit.leased_by.is_(None))).first()
    if existing is not None:
        existing.item_count += 1
        return existing.id
    fallback = WorkUnit(id=new_id("wu"), batch_id=batch.id, lane=lane.name,
                        offering_id=lane.offering_id, provider=lane.provider, model=lane.model,
                        provider_model_id=lane.provider_model_id, mode=lane.mode, item_count=1)
    session.add(fallback)
    session.flush()
    session.execute(update(Batch).where(Batch.id == batch.id)
                    .values(units_total=Batch.units_total + 1))
    # Delayed a little so the failing unit's other items can join it before it starts.
    queue.add_outbox(session, DISPATCH_JOB, fallback.id, delay=1)
    return fallback.id


def _fail_remaining(session: Session, unit_id: str, reason: str) -> None:
    items = session.scalars(select(Item).where(Item.work_unit_id == unit_id,
                                               Item.status.in_(ACTIVE))).all()
    unit = session.get(WorkUnit, unit_id)
    ingest(session, unit_id, [ItemResult(i.id, False, error=error(
        f"provider_batch_{reason}", f"The provider batch {reason}.", retryable=True,
        provider=unit.provider)) for i in items])


# --- completion ------------------------------------------------------------------------------

def complete_unit(session: Session, unit_id: str, settings: Settings) -> None:
    """Close a unit whose items are all done or moved; settle it once; maybe finalize."""
    unit = session.get(WorkUnit, unit_id)
    left = session.scalar(select(func.count()).select_from(Item).where(
        Item.work_unit_id == unit_id, Item.status.in_(ACTIVE)))
    if left:
        # Transient failures went back to pending: run the unit again after a backoff.
        unit.lease_until, unit.leased_by, unit.status = None, None, "pending"
        queue.add_outbox(session, DISPATCH_JOB, unit_id, delay=backoff(unit.attempts, settings))
        return
    _close_unit(session, unit, "completed")


def backoff(runs: int, settings: Settings, retry_after: float = 0) -> float:
    """Jittered exponential backoff (capped at 5 minutes), never before Retry-After."""
    base = settings.retry_base_delay * (2 ** max(0, runs - 1))
    return max(retry_after, min(300.0, base) * random.uniform(0.5, 1.5))


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
