"""Finalizing a batch: close what is left, write the artifacts, release credit, and the
receipts (SPEC §5). Also the sweeper that recovers work a dead worker left behind (SPEC §11)."""
from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from batchrouter import catalog, ledger, money, pricing, queue, webhooks
from batchrouter.batches import DISPATCH_JOB, FINALIZE_JOB
from batchrouter.db import utcnow
from batchrouter.ids import new_id
from batchrouter.models import Batch, File, Item, Quote, Reservation, WorkUnit
from batchrouter.models.batches import BATCH_TERMINAL, ITEM_TERMINAL
from batchrouter.storage import FilesystemStorage

log = logging.getLogger(__name__)
PAGE = 2000
ACTIVE = ("pending", "running")


def finalize(session: Session, storage: FilesystemStorage, batch_id: str,
             cancel_submitted=None) -> str | None:
    """Bring a batch to its terminal status once every unit is done, or on cancel/expiry.

    `cancel_submitted(unit)` cancels a unit's provider batch (the job passes the adapters);
    it is called for every provider batch still running when the batch stops."""
    batch = session.get(Batch, batch_id)
    if batch is None or batch.status in BATCH_TERMINAL:
        return None
    now = utcnow()
    stopping = batch.cancel_requested_at is not None or batch.sla_deadline <= now
    if not stopping and session.scalar(select(func.count()).select_from(WorkUnit).where(
            WorkUnit.batch_id == batch_id,
            WorkUnit.status.notin_(("completed", "cancelled", "expired")))):
        return None  # a unit is still working; its completion calls finalize again
    if stopping:
        _cancel_provider_batches(session, batch, cancel_submitted)
        _stop_remaining(session, batch, "cancelled" if batch.cancel_requested_at else "expired")
    batch.status = "completing"
    _write_artifacts(session, storage, batch)
    from batchrouter.openai_artifacts import write_openai_artifacts  # (imports this module)
    write_openai_artifacts(session, storage, batch, finalizing_at=now)
    if batch.mode == "live":
        ledger.release(session, batch.workspace_id, batch.id)
    batch.status = _terminal_status(batch)
    batch.finished_at = now
    if batch.status == "failed":
        batch.error_summary = _error_summary(session, batch.id)
    webhooks.batch_event(session, batch, f"batch.{batch.status}")
    return batch.status


def _cancel_provider_batches(session: Session, batch: Batch, cancel_submitted) -> None:
    """Stop provider batches still running so the provider stops (and stops billing)."""
    if cancel_submitted is None:
        return
    for unit in session.scalars(select(WorkUnit).where(WorkUnit.batch_id == batch.id,
                                                       WorkUnit.status == "submitted")):
        try:
            cancel_submitted(unit)
        except Exception:
            log.warning("could not cancel provider batch of unit %s", unit.id, exc_info=True)


def _terminal_status(batch: Batch) -> str:
    if batch.cancel_requested_at is not None:
        return "cancelled"
    if batch.expired:
        return "expired"
    return "completed" if batch.succeeded else "failed"


def _stop_remaining(session: Session, batch: Batch, status: str) -> None:
    """Items not finished become cancelled/expired; their units close and settle what ran."""
    from batchrouter.dispatch import _close_unit

    error = {"code": f"batch_{status}", "retryable": False,
             "message": "The batch was cancelled before this item ran." if status == "cancelled"
             else "The batch's SLA deadline passed before this item finished."}
    stopped = session.execute(update(Item).where(Item.batch_id == batch.id,
                                                 Item.status.in_(ACTIVE))
                              .values(status=status, error=error, finished_at=utcnow()))
    count = stopped.rowcount or 0
    session.execute(update(Batch).where(Batch.id == batch.id).values(
        pending=0, running=0, **{status: getattr(Batch, status) + count}))
    session.refresh(batch)
    for unit in session.scalars(select(WorkUnit).where(
            WorkUnit.batch_id == batch.id,
            WorkUnit.status.notin_(("completed", "cancelled", "expired")))):
        _close_unit(session, unit, status, finalize=False)


def _write_artifacts(session: Session, storage: FilesystemStorage, batch: Batch) -> None:
    """Results and errors JSONL, spliced from the stored result lines in item order."""
    results = _artifact(storage, batch, "results")
    errors = _artifact(storage, batch, "errors")
    with storage.open_write(results["key"]) as out_ok, storage.open_write(errors["key"]) as out_err:
        last = -1
        while True:
            rows = session.execute(
                select(Item.seq, Item.status, Item.result, Item.customer_item_id, Item.error,
                       Item.attempts).where(Item.batch_id == batch.id, Item.seq > last)
                .order_by(Item.seq).limit(PAGE)).all()
            if not rows:
                break
            last = rows[-1].seq
            for row in rows:
                if row.status == "succeeded":
                    _write(results, out_ok, row.result.encode() + b"\n")
                else:
                    _write(errors, out_err, _error_line(row))
    batch.results_file_id = _file_row(session, batch, results, "batch_output")
    batch.errors_file_id = _file_row(session, batch, errors, "batch_errors")


def _artifact(storage, batch: Batch, kind: str) -> dict:
    return {"id": new_id("file"), "kind": kind, "sha": hashlib.sha256(), "bytes": 0,
            "lines": 0, "key": f"artifacts/{batch.workspace_id}/{batch.id}/{kind}.jsonl"}


def _write(artifact: dict, fh, data: bytes) -> None:
    fh.write(data)
    artifact["sha"].update(data)
    artifact["bytes"] += len(data)
    artifact["lines"] += 1


def _error_line(row) -> bytes:
    return json.dumps({"customer_item_id": row.customer_item_id, "status": row.status,
                       "error": row.error or {"code": "unknown", "message": "No result.",
                                              "retryable": False},
                       "attempts": row.attempts}, separators=(",", ":")).encode() + b"\n"


def _file_row(session: Session, batch: Batch, artifact: dict, purpose: str) -> str:
    session.add(File(id=artifact["id"], workspace_id=batch.workspace_id, mode=batch.mode,
                     purpose=purpose, filename=f"{batch.id}_{artifact['kind']}.jsonl",
                     storage_key=artifact["key"], bytes=artifact["bytes"],
                     sha256=artifact["sha"].hexdigest(), item_count=artifact["lines"],
                     status="processed"))
    return artifact["id"]


def _error_summary(session: Session, batch_id: str) -> dict:
    codes = Counter()
    for (error,) in session.execute(select(Item.error).where(Item.batch_id == batch_id,
                                                             Item.status != "succeeded")):
        codes[(error or {}).get("code", "unknown")] += 1
    return {"top_causes": [{"code": c, "items": n} for c, n in codes.most_common(5)]}


# --- receipts --------------------------------------------------------------------------------

def route_receipt(session: Session, batch: Batch, *, after: int = -1, limit: int = 100) -> dict:
    """Per item: every attempt (lane, provider ids, timing, usage, costs, outcome); paged."""
    rows = session.execute(select(Item).where(Item.batch_id == batch.id, Item.seq > after)
                           .order_by(Item.seq).limit(limit)).scalars().all()
    quote = session.get(Quote, batch.quote_id)
    lanes = {lane["index"]: lane["lane"] for lane in quote.lanes}
    return {"object": "route_receipt", "batch_id": batch.id, "status": batch.status,
            "items": [{"customer_item_id": i.customer_item_id, "status": i.status,
                       "quoted_lane": lanes.get(i.quoted_lane), "final_lane": lanes.get(i.lane),
                       "attempts": i.attempt_log,
                       "usage": {"input_tokens": i.input_tokens,
                                 "output_tokens": i.output_tokens},
                       "quoted": {"low": money.to_wire(i.low_micros),
                                  "expected": money.to_wire(i.expected_micros),
                                  "high": money.to_wire(i.high_micros)},
                       "charged": money.to_wire(i.charged_micros),
                       "provider_cost": money.to_wire(i.provider_cost_micros),
                       # What we absorbed: a fallback lane that cost more than the locked price.
                       "platform_cost": money.to_wire(max(0, i.provider_cost_micros
                                                          - i.charged_subtotal_micros))}
                      for i in rows],
            "next_cursor": str(rows[-1].seq) if len(rows) == limit else None}


def billing_receipt(session: Session, batch: Batch) -> dict:
    """Quoted vs settled, subtotal, fee, lanes that ran and lanes rejected, and the saving."""
    quote = session.get(Quote, batch.quote_id)
    ran = session.execute(select(WorkUnit.lane, func.sum(WorkUnit.item_count))
                          .where(WorkUnit.batch_id == batch.id)
                          .group_by(WorkUnit.lane)).all()
    reservation = session.scalars(select(Reservation)
                                  .where(Reservation.batch_id == batch.id)).first()
    return {
        "object": "billing_receipt", "batch_id": batch.id, "mode": batch.mode,
        "status": batch.status, "currency": "usd",
        "quoted": {"low": money.to_wire(batch.quoted_low_micros),
                   "expected": money.to_wire(batch.quoted_expected_micros),
                   "high": money.to_wire(batch.quoted_high_micros)},
        "reserved": money.to_wire(reservation.amount if reservation else 0),
        "settled": money.to_wire(batch.settled_micros),
        "provider_subtotal": money.to_wire(batch.settled_subtotal_micros),
        "fee": money.to_wire(batch.settled_fee_micros),
        "fee_rate": money.to_wire(quote.fee_ppm),
        "released": money.to_wire(reservation.released if reservation else 0),
        "provider_cost": money.to_wire(batch.provider_cost_micros),
        "lanes_ran": [{"lane": lane, "items": int(n)} for lane, n in sorted(ran)],
        "lanes_rejected": [{"lane": lane["lane"], "code": r["code"], "items": r["items"],
                            "reason": r["reason"]}
                           for lane in quote.lanes for r in lane["rejections"]],
        "optimization": optimization_report(session, batch),
    }


def optimization_report(session: Session, batch: Batch) -> dict:
    """What the succeeded items would have cost on their model's first-party provider at the
    synchronous list price (plus the same fee), against what they were charged."""
    models = catalog.models_by_slug(session)
    first_party = {}
    for lane in catalog.load_lanes(session):
        family = models[lane.model].family if lane.model in models else None
        if lane.mode == "sync" and lane.provider == family:
            first_party[lane.model] = lane
    quote = session.get(Quote, batch.quote_id)
    lane_model = {lane["index"]: lane["model"] for lane in quote.lanes}
    baseline = charged = 0
    rows = session.execute(select(Item.quoted_lane, Item.input_tokens, Item.output_tokens,
                                  Item.charged_micros)
                           .where(Item.batch_id == batch.id, Item.status == "succeeded"))
    for quoted_lane, tokens_in, tokens_out, item_charge in rows:
        reference = first_party.get(lane_model.get(quoted_lane))
        if reference is None:
            continue  # no first-party list price to compare with (e.g. sandbox models)
        sub, fee = pricing.price(tokens_in, tokens_out, reference.input_rate,
                                 reference.output_rate, 0, quote.fee_ppm)
        baseline += sub + fee
        charged += item_charge
    return {"baseline": "first-party provider, synchronous list price",
            "baseline_cost": money.to_wire(baseline), "charged": money.to_wire(charged),
            "saving": money.to_wire(baseline - charged),
            "saving_percent": round((baseline - charged) * 100 / baseline, 1) if baseline else None}


# --- sweeper ---------------------------------------------------------------------------------

def sweep(session: Session, *, stale_after: int = 60) -> dict:
    """Re-queue work whose worker died, expire batches past their deadline, finish batches
    whose finalize was lost, and release reservations of terminal batches."""
    now = utcnow()
    found = {"requeued": 0, "expired": 0, "finalized": 0, "released": 0}
    stale = now - timedelta(seconds=stale_after)
    units = session.execute(select(WorkUnit.id, WorkUnit.status).join(Batch).where(
        Batch.status.notin_(BATCH_TERMINAL),
        WorkUnit.status.in_(("pending", "running", "submitted")),
        ((WorkUnit.lease_until.is_not(None)) & (WorkUnit.lease_until < now))
        | ((WorkUnit.lease_until.is_(None)) & (WorkUnit.updated_at < stale)))).all()
    from batchrouter.dispatch import POLL_JOB
    for unit_id, status in units:
        queue.add_outbox(session, POLL_JOB if status == "submitted" else DISPATCH_JOB, unit_id)
        session.execute(update(WorkUnit).where(WorkUnit.id == unit_id).values(updated_at=now))
        found["requeued"] += 1
    for batch in session.scalars(select(Batch).where(Batch.status.notin_(BATCH_TERMINAL))):
        if batch.sla_deadline <= now:
            found["expired"] += 1
            queue.add_outbox(session, FINALIZE_JOB, batch.id)
        elif batch.updated_at < stale and batch.units_done >= batch.units_total:
            found["finalized"] += 1
            queue.add_outbox(session, FINALIZE_JOB, batch.id)
    for reservation in ledger.open_reservations(session):
        batch = session.get(Batch, reservation.batch_id)
        if batch is not None and batch.status in BATCH_TERMINAL:
            ledger.release(session, reservation.workspace_id, batch.id)
            found["released"] += 1
    return found


def item_counts(session: Session, batch_id: str) -> dict:
    """Counts from the items themselves (tests and audits compare them with the counters)."""
    rows = session.execute(select(Item.status, func.count()).where(Item.batch_id == batch_id)
                           .group_by(Item.status)).all()
    out = {status: 0 for status in ITEM_TERMINAL + ACTIVE}
    out.update({status: n for status, n in rows})
    return out
