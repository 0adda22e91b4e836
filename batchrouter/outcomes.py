"""What a provider's answer does to an item: priced and kept, retried, moved down its fallback
ladder, or failed (SPEC §4 "what a quote locks", §5 item errors).

Policy: at most 8 attempts per item across lanes. A permanent failure is never retried on the
same lane. A transient one is retried on the lane up to 3 times when the item has a fallback
left (then it moves down the ladder), or up to the 8 when the lane is its last. A degraded lane
(breaker open, stalled provider batch) moves items down the ladder at once. Items move at the
quoted price: settlement always uses the rates of the lane the item was quoted on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from batchrouter import money, pricing, queue, webhooks
from batchrouter.batches import DISPATCH_JOB
from batchrouter.db import utcnow
from batchrouter.ids import new_id
from batchrouter.models import Batch, Item, Quote, WorkUnit
from batchrouter.providers.base import ItemResult, error

MAX_ATTEMPTS = 8  # per item, across lanes (SPEC §5)
ATTEMPTS_PER_LANE = 3  # before moving down the ladder, when there is one
ACTIVE = ("pending", "running")


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
                                               Item.work_unit_id == unit_id,
                                               Item.status.in_(ACTIVE))).all()
    if len(items) < len(by_id):
        _record_late(session, unit, lanes, by_id, {i.id for i in items})
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
    webhooks.batch_event(session, batch, "batch.progress")


def _record_late(session: Session, unit: WorkUnit, lanes: dict, by_id: dict,
                 current: set) -> None:
    """Results for items this unit no longer owns (moved on, or already finished): an
    abandoned attempt answering late. Kept on the item's receipt, never billed."""
    lane = next((lane for lane in lanes.values() if lane.name == unit.lane), None)
    late = session.scalars(select(Item).where(Item.id.in_([i for i in by_id if i not in current]),
                                              Item.batch_id == unit.batch_id)).all()
    for item in late:
        result = by_id[item.id]
        if lane is None or not result.ok:
            continue
        entry = _attempt_entry(item, lane, result, 0)
        entry.update(attempt=None, outcome="late_ignored", our_price="0")
        item.attempt_log = item.attempt_log + [entry]


def _attempt_entry(item: Item, lane: LockedLane, result: ItemResult, fee_ppm: int) -> dict:
    entry = {"attempt": item.attempts + 1, "lane": lane.name,
             "provider_request_id": result.provider_request_id, "at": utcnow().isoformat() + "Z",
             "latency_ms": result.latency_ms, "usage": result.usage,
             "outcome": "succeeded" if result.ok else "failed"}
    if result.served_by:
        entry["served_by"] = result.served_by
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
    on_this_lane = sum(1 for a in item.attempt_log
                       if a["lane"] == unit.lane and a.get("attempt") is not None)
    if item.attempts >= MAX_ATTEMPTS:
        return _fail_item(item, err)
    lane_budget = ATTEMPTS_PER_LANE if item.ladder else MAX_ATTEMPTS
    if err.get("retryable") and on_this_lane < lane_budget and not err.get("lane_degraded"):
        item.status, item.error = "pending", err
        return "retry"
    if item.ladder:
        _move_down(session, item, unit, err)
        return "moved"
    if err.get("retryable") and err.get("lane_degraded"):
        item.status, item.error = "pending", err  # no fallback allowed: wait for the lane
        return "retry"
    return _fail_item(item, err)


def _move_down(session: Session, item: Item, unit: WorkUnit, err: dict) -> None:
    next_lane, rest = item.ladder[0], item.ladder[1:]
    item.lane, item.ladder, item.status, item.error = next_lane, rest, "pending", err
    item.work_unit_id = _fallback_unit(session, unit, next_lane)
    unit.item_count -= 1  # the item now counts on the fallback lane only


def degrade(session: Session, unit_id: str, code: str, message: str) -> int:
    """The unit's lane is unhealthy (breaker open, provider batch stalled): its unfinished
    items move down their ladders now, without spending an attempt; items with no fallback
    (or `allow_fallbacks: false`) stay and wait for the lane. Returns how many moved."""
    unit = session.get(WorkUnit, unit_id)
    items = session.scalars(select(Item).where(Item.work_unit_id == unit_id,
                                               Item.status.in_(ACTIVE))).all()
    err = error(code, message, retryable=True, provider=unit.provider)
    moved = 0
    for item in items:
        if item.ladder:
            was = item.status
            _move_down(session, item, unit, err)
            moved += 1
            if was == "running":
                session.execute(update(Batch).where(Batch.id == unit.batch_id).values(
                    running=Batch.running - 1, pending=Batch.pending + 1))
        else:
            item.error = {**err, "message": message + " Fallbacks are not allowed for this "
                          "item, so it waits for the lane to recover (or the SLA deadline)."}
    return moved


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


def fail_remaining(session: Session, unit_id: str, code: str, message: str, *,
                   degraded: bool = False) -> None:
    """Every unfinished item of the unit failed this attempt with one transient error (the
    provider batch expired, failed, was cancelled, stalled, or could not be submitted)."""
    items = session.scalars(select(Item.id).where(Item.work_unit_id == unit_id,
                                                  Item.status.in_(ACTIVE))).all()
    unit = session.get(WorkUnit, unit_id)
    err = error(code, message, retryable=True, provider=unit.provider)
    if degraded:
        err["lane_degraded"] = True
    ingest(session, unit_id, [ItemResult(i, False, error=err) for i in items])
