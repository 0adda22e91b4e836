"""The `hybrid` routing mode's run-time rule (SPEC §4): items still unfinished when 80 % of the
SLA window has passed leave their batch lane for the cheapest eligible sync lane.

"Eligible" means on the item's own fallback ladder (the quote already filtered those lanes by
operation, privacy, region, preferences and price cap). The item moves at the quoted price like
any fallback; whatever its abandoned provider batch still delivers is recorded, never billed.
"""
from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from batchrouter.db import utcnow
from batchrouter.models import Batch, Item, Quote, WorkUnit
from batchrouter.models.batches import BATCH_TERMINAL
from batchrouter.outcomes import ACTIVE, _fallback_unit, locked_lanes
from batchrouter.pricing import price

TAIL_AT = 0.8


def _cheapest_sync(ladder: list[int], lanes: dict) -> int | None:
    sync = [i for i in ladder if lanes[i].mode == "sync"]
    # Expected cost ranks lanes like the quote did; a 1k/1k token item stands in for it.
    return min(sync, key=lambda i: price(1000, 1000, lanes[i].input_rate, lanes[i].output_rate,
                                         0, 0)[0], default=None)


def move_tail(session: Session) -> int:
    """Move the unfinished batch-lane items of hybrid batches past 80 % of their window."""
    now = utcnow()
    moved = 0
    for batch in session.scalars(select(Batch).where(Batch.status.notin_(BATCH_TERMINAL),
                                                     Batch.cancel_requested_at.is_(None))):
        if (batch.controls or {}).get("routing_mode") != "hybrid":
            continue
        window = batch.sla_deadline - batch.created_at
        if now < batch.created_at + window * TAIL_AT or now >= batch.sla_deadline:
            continue
        moved += _move_batch(session, batch)
    return moved


def _move_batch(session: Session, batch: Batch) -> int:
    lanes = locked_lanes(session.get(Quote, batch.quote_id))
    units = {u.id: u for u in session.scalars(select(WorkUnit).where(
        WorkUnit.batch_id == batch.id, WorkUnit.mode == "batch",
        WorkUnit.status.in_(("pending", "running", "submitted"))))}
    if not units:
        return 0
    items = session.scalars(select(Item).where(Item.work_unit_id.in_(list(units)),
                                               Item.status.in_(ACTIVE))).all()
    moved = 0
    for item in items:
        target = _cheapest_sync(item.ladder, lanes)
        if target is None:
            continue  # no sync lane it may use: it stays and waits
        unit = units[item.work_unit_id]
        if item.status == "running":
            session.execute(update(Batch).where(Batch.id == batch.id).values(
                running=Batch.running - 1, pending=Batch.pending + 1))
        item.lane, item.status = target, "pending"
        item.ladder = [i for i in item.ladder if i != target]
        item.error = {"code": "sla_tail", "retryable": True, "provider": unit.provider,
                      "message": "80 % of the SLA window passed: moved to a sync lane."}
        item.work_unit_id = _fallback_unit(session, unit, target)
        unit.item_count -= 1
        moved += 1
    return moved
