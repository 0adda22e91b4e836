"""Batches: create from a quote (reserve, insert items, split into work units), read, cancel.

Dispatch lives in dispatch.py and finalization in finalize.py; this module owns the batch
record and its public shape (SPEC §5, §6).
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

import msgspec
import orjson
from sqlalchemy import bindparam, case, func, insert, select
from sqlalchemy.orm import Session

from batchrouter import bulk, ledger, manifest, money, privacy, queue, quotes, routing, webhooks
from batchrouter.db import iso, utcnow
from batchrouter.errors import Conflict, InvalidRequest, NotFound, ValidationFailed
from batchrouter.ids import new_id, new_ids
from batchrouter.models import ApiKey, Batch, File, Item, OutboxMessage, Quote, WorkUnit
from batchrouter.models.batches import BATCH_TERMINAL, UNIT_TERMINAL

DISPATCH_JOB = "jobs.dispatch.run_work_unit"
FINALIZE_JOB = "jobs.dispatch.finalize_batch"
_JSON = msgspec.json.Encoder()


@dataclass(frozen=True)
class ManifestLines:
    """The raw lines of the manifest being submitted, and their ids in order."""

    lines: list[bytes]
    customer_ids: list[str]
    sha256: str
    input_file_id: str | None


def _ids_of(items: list) -> list[str]:
    return [item.get("customer_item_id", item.get("custom_id")) if isinstance(item, dict)
            else None for item in items]


def inline_lines(items: list) -> ManifestLines:
    """Inline items as the same canonical lines the quote hashed."""
    if not isinstance(items, list):
        raise InvalidRequest("items must be a list of item objects.", code="invalid_manifest")
    lines = list(manifest.encode_items(items))
    digest = hashlib.sha256(b"".join(lines)).hexdigest()
    return ManifestLines(lines, _ids_of(items), digest, None)


def file_lines(session: Session, storage, workspace_id: str, file_id: str) -> ManifestLines:
    """A stored, preflighted file's lines (ids come from the summaries made at upload)."""
    from batchrouter import files

    record = files.get_file(session, workspace_id, file_id)
    summaries = files.load_summaries(storage, record) if record.status == "processed" else []
    by_line = {s.line: s.customer_item_id for s in summaries}
    lines, ids = [], []
    with storage.open(record.storage_key) as fh:
        for number, raw in enumerate(manifest.iter_lines(fh), start=1):
            if number in by_line:
                lines.append(raw)
                ids.append(by_line[number])
    return ManifestLines(lines, ids, record.sha256, record.id)


def request_lines(session: Session, storage, workspace_id: str, data: dict,
                  quote: Quote) -> ManifestLines:
    """The manifest of a create request: inline items, a file, or the quote's own file."""
    items, file_id = data.get("items"), data.get("input_file_id")
    if items is not None and file_id is not None:
        raise InvalidRequest("Send either items or input_file_id, not both.",
                             code="invalid_manifest")
    if items is not None:
        return inline_lines(items)
    file_id = file_id or quote.input_file_id
    if not isinstance(file_id, str):
        raise InvalidRequest("Send the quoted manifest again as items or input_file_id.",
                             code="invalid_manifest")
    return file_lines(session, storage, workspace_id, file_id)


def _check_quote(quote: Quote, source: ManifestLines) -> None:
    if quote.status != "open":
        raise Conflict("This quote was already used to create a batch.", code="quote_used")
    if quote.expires_at <= utcnow():
        raise Conflict("The quote expired; ask for a new one (prices may have changed).",
                       code="quote_expired")
    if source.sha256 != quote.manifest_sha256 or len(source.lines) != quote.item_count:
        raise Conflict("These items are not the manifest that was quoted.",
                       code="quote_mismatch")


def _clean_metadata(metadata) -> dict:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or len(metadata) > 16 or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in metadata.items()):
        raise ValidationFailed("metadata must be at most 16 string pairs.",
                               code="invalid_metadata")
    return metadata


def create_batch(session: Session, *, quote: Quote, source: ManifestLines,
                 metadata: dict | None = None, webhook: dict | None = None,
                 key_id: str | None = None, batch_id: str | None = None) -> Batch:
    """Accept a quote: reserve its high estimate, write the items in work units, and hand the
    units to the queue through the outbox — all in one transaction. `batch_id` lets a caller
    that announced the id before (the OpenAI surface) keep it."""
    if key_id:  # every API surface passes its key: a restricted account's keys start nothing
        privacy.check_not_restricted(session, session.scalar(
            select(ApiKey.created_by_id).where(ApiKey.id == key_id)))
    _check_quote(quote, source)
    metadata = _clean_metadata(metadata)
    session.commit()  # end any read snapshot: the workspace lock must come first
    # Under the lock, look again: a concurrent create of the same quote may have won.
    ledger.lock_workspace(session, quote.workspace_id)
    session.refresh(quote)
    _check_quote(quote, source)
    batch_id = batch_id or new_id("bat")
    if quote.mode == "live":
        ledger.reserve(session, quote.workspace_id, batch_id, quote.high_micros)
    choices = quotes.decode_selections(quote.selections)
    controls = quote.controls
    now = utcnow()
    batch = Batch(id=batch_id, workspace_id=quote.workspace_id, mode=quote.mode,
                  status="queued", quote_id=quote.id, input_file_id=source.input_file_id,
                  controls=controls, metadata_=metadata, webhook=webhook,
                  created_by_key_id=key_id, total=quote.item_count,
                  pending=quote.item_count, quoted_low_micros=quote.low_micros,
                  quoted_expected_micros=quote.expected_micros,
                  quoted_high_micros=quote.high_micros,
                  reserved_micros=quote.high_micros if quote.mode == "live" else 0,
                  sla_deadline=now + timedelta(seconds=routing.SLA_WINDOWS[controls["sla_tier"]]),
                  created_at=now, updated_at=now)
    session.add(batch)
    session.flush()
    with manifest.gc_paused():
        units = _write_units_and_items(session, batch, quote, source, choices)
    batch.units_total = len(units)
    quote.status, quote.accepted_at = "accepted", now
    _enqueue_units(session, units)
    webhooks.on_batch_created(session, batch)
    return batch


def _write_units_and_items(session: Session, batch: Batch, quote: Quote,
                           source: ManifestLines, choices: list) -> list[str]:
    """Group items by lane, cut each lane into work units, bulk-insert everything."""
    lanes = {lane["index"]: lane for lane in quote.lanes}
    plan = {p["lane"]: p["unit_size"] for p in quote.plan}
    by_lane: dict[int, list[int]] = {}
    for position, choice in enumerate(choices):
        by_lane.setdefault(choice[0], []).append(position)
    unit_rows, unit_of = [], [""] * len(choices)
    for lane_index, positions in by_lane.items():
        lane = lanes[lane_index]
        size = plan.get(lane["lane"], routing.SYNC_UNIT)
        for start in range(0, len(positions), size):
            chunk = positions[start:start + size]
            unit_id = new_id("wu")
            unit_rows.append(_unit_row(unit_id, batch.id, lane, len(chunk)))
            for p in chunk:
                unit_of[p] = unit_id
    session.execute(insert(WorkUnit), unit_rows)
    # Rows in manifest order with ascending ids: every index then grows at its end, and B-tree
    # appends are several times cheaper than inserts in random places. Most items of a lane
    # share a ladder: each distinct one is encoded once.
    ladders = {ladder: _JSON.encode(ladder).decode() for ladder in {c[6] for c in choices}}
    rows = [(item_id, unit_id, p, customer_id, line, c[0], c[0], ladders[c[6]], c[1], c[2], c[3])
            for p, (item_id, unit_id, customer_id, line, c) in enumerate(zip(
                sorted(new_ids("itm", len(choices))), unit_of, source.customer_ids,
                source.lines, choices))]
    bulk.insert_rows(session, Item.__table__, ITEM_COLUMNS, rows,
                     constants={"batch_id": batch.id, **ITEM_DEFAULTS})
    return [row["id"] for row in unit_rows]


def _unit_row(unit_id: str, batch_id: str, lane: dict, count: int) -> dict:
    now = utcnow()
    return {"id": unit_id, "batch_id": batch_id, "lane": lane["lane"],
            "offering_id": lane["offering_id"], "provider": lane["provider"],
            "model": lane["model"], "provider_model_id": lane["provider_model_id"],
            "mode": lane["mode"], "item_count": count, "status": "pending", "attempts": 0,
            "settled": False, "created_at": now, "updated_at": now}


ITEM_COLUMNS = ["id", "work_unit_id", "seq", "customer_item_id", "line", "quoted_lane", "lane",
                "ladder", "low_micros", "expected_micros", "high_micros"]
# The same in every new item: written by the statement, not bound per row.
ITEM_DEFAULTS = {"status": "pending", "attempts": 0, "attempt_log": "[]", "input_tokens": 0,
                 "output_tokens": 0, "charged_micros": 0, "charged_subtotal_micros": 0,
                 "provider_cost_micros": 0}


def _enqueue_units(session: Session, unit_ids: Iterable[str]) -> None:
    """One outbox row per work unit, in bulk (the fast path enqueues them after commit)."""
    now = utcnow()
    rows = [{"id": new_id("obx"), "func": DISPATCH_JOB, "args": [unit_id], "queue": "default",
             "available_at": now, "attempts": 0, "created_at": now} for unit_id in unit_ids]
    session.execute(insert(OutboxMessage), rows)
    session.info.setdefault("outbox_ids", []).extend(row["id"] for row in rows)


# --- reading ---------------------------------------------------------------------------------

def get_batch(session: Session, workspace_id: str, batch_id: str) -> Batch:
    batch = session.get(Batch, batch_id) if isinstance(batch_id, str) else None
    if batch is None or batch.workspace_id != workspace_id:
        raise NotFound("No such batch in this workspace.", code="batch_not_found")
    return batch


def read_batch(session: Session, workspace_id: str, batch_id: str):
    """The batch as the console's read-only pages show it (detail, progress fragment, items):
    a plain row whose attributes are the column names (the model's, but `metadata` for
    `metadata_`), at a quarter of the cost of loading the ORM object, which matters for a
    fragment every open batch page polls. Views that change the batch use `get_batch`."""
    row = session.execute(_read_batch_stmt(), {"batch_id": batch_id,
                                               "workspace_id": workspace_id}).first() \
        if isinstance(batch_id, str) else None
    if row is None:
        raise NotFound("No such batch in this workspace.", code="batch_not_found")
    return row


@functools.cache
def _read_batch_stmt():
    table = Batch.__table__
    return select(table).where(table.c.id == bindparam("batch_id"),
                               table.c.workspace_id == bindparam("workspace_id"))


def list_batches(session: Session, workspace_id: str, *, status: str | None = None,
                 search: str | None = None, before: str | None = None,
                 limit: int = 20) -> list[Batch]:
    """Newest first, keyset-paged by id (ids sort by creation time)."""
    stmt = select(Batch).where(Batch.workspace_id == workspace_id)
    if status:
        stmt = stmt.where(Batch.status == status)
    if before:
        stmt = stmt.where(Batch.id < before)
    if search:
        stmt = stmt.where(Batch.id.contains(search.strip()[:60]))
    return list(session.scalars(stmt.order_by(Batch.id.desc()).limit(limit)))


def active_batches(session: Session, workspace_id: str, limit: int = 10) -> list[Batch]:
    return list(session.scalars(select(Batch).where(
        Batch.workspace_id == workspace_id, Batch.status.notin_(BATCH_TERMINAL))
        .order_by(Batch.id.desc()).limit(limit)))


def counts(batch: Batch) -> dict:
    return {"total": batch.total, "succeeded": batch.succeeded, "failed": batch.failed,
            "cancelled": batch.cancelled, "expired": batch.expired, "running": batch.running,
            "pending": batch.pending}


def progress(batch: Batch) -> int:
    """Percent of items in a terminal state."""
    done = batch.succeeded + batch.failed + batch.cancelled + batch.expired
    return 100 if batch.total == 0 else int(done * 100 // batch.total)


def progress_etag(batch: Batch) -> str:
    """Changes whenever the progress region would: every field it shows moves with one of
    these (a unit finishing bumps units_done in the same transaction)."""
    state = (batch.status, batch.total, batch.pending, batch.running,
             batch.succeeded, batch.failed, batch.cancelled, batch.expired, batch.units_done,
             batch.units_total, batch.quoted_expected_micros, batch.reserved_micros,
             batch.settled_micros, batch.results_file_id, batch.errors_file_id,
             batch.error_summary, batch.updated_at)
    return hashlib.blake2b(repr(state).encode(), digest_size=12).hexdigest()


def to_json(batch: Batch) -> dict:
    return {
        "id": batch.id, "object": "batch", "mode": batch.mode, "status": batch.status,
        "quote_id": batch.quote_id, "input_file_id": batch.input_file_id,
        "created_at": iso(batch.created_at), "started_at": iso(batch.started_at),
        "finished_at": iso(batch.finished_at), "sla_deadline": iso(batch.sla_deadline),
        "sla_tier": batch.controls["sla_tier"], "routing_mode": batch.controls["routing_mode"],
        "privacy_tier": batch.controls["privacy_tier"], "metadata": batch.metadata_,
        "counts": counts(batch), "progress_percent": progress(batch),
        "cost_usd": {"quoted_expected": money.to_wire(batch.quoted_expected_micros),
                     "quoted_high": money.to_wire(batch.quoted_high_micros),
                     "reserved": money.to_wire(batch.reserved_micros),
                     "settled": money.to_wire(batch.settled_micros)},
        "results_file_id": batch.results_file_id, "errors_file_id": batch.errors_file_id,
        "error_summary": batch.error_summary,
    }


# --- cancel ----------------------------------------------------------------------------------

def request_cancel(session: Session, batch: Batch) -> Batch:
    """Stop dispatch; the finalizer delivers what finished and releases the rest."""
    if batch.status in BATCH_TERMINAL:
        raise Conflict(f"The batch is already {batch.status}.", code="batch_terminal")
    if batch.cancel_requested_at is None:
        batch.cancel_requested_at = utcnow()
        batch.status = "cancelling"
        queue.add_outbox(session, FINALIZE_JOB, batch.id)
    return batch


def unit_lanes(session: Session, batch_id: str) -> list[dict]:
    """Per-lane breakdown for the batch page: units and items by lane, summed by the database
    (a 100,000-item batch has hundreds of units; the progress fragment polls this)."""
    rows = session.execute(_unit_lanes_stmt(), {"batch_id": batch_id}).all()
    return [{"lane": lane, "units": units, "items": int(items), "done": int(finished)}
            for lane, units, items, finished in rows]


@functools.cache
def _unit_lanes_stmt():
    # Built once: composing it cost about as much as running it, on every poll.
    done = case((WorkUnit.status.in_(UNIT_TERMINAL), 1), else_=0)
    return (select(WorkUnit.lane, func.count(), func.sum(WorkUnit.item_count), func.sum(done))
            .where(WorkUnit.batch_id == bindparam("batch_id"))
            .group_by(WorkUnit.lane).order_by(WorkUnit.lane))


def files_of(session: Session, batch: Batch) -> dict[str, File]:
    ids = [i for i in (batch.results_file_id, batch.errors_file_id) if i]
    return {f.id: f for f in session.scalars(select(File).where(File.id.in_(ids)))} if ids else {}



def result_rows(session: Session, batch_id: str, *, status: str | None, after: int,
                limit: int) -> tuple[list[dict], str | None]:
    """Per-item rows for GET /results and the items table: keyset on the manifest position."""
    import json

    params = {"batch_id": batch_id, "after": after, "limit": limit}
    if status:
        params["status"] = status
    rows = session.execute(_result_rows_stmt(bool(status)), params).all()
    data = [{"customer_item_id": r.customer_item_id, "status": r.status,
             "result": json.loads(r.result) if r.result else None, "error": r.error,
             "attempts": r.attempts} for r in rows]
    return data, (str(rows[-1].seq) if len(rows) == limit else None)


class ItemRow(NamedTuple):
    """One row of the console's items table, already in the shape the template prints."""

    customer_item_id: str
    status: str
    attempts: int
    lane: str | None  # None when the item has no result (yet)
    text: str  # output text (first 160 characters), or the error message
    cost_usd: str | None
    error_code: str | None


def item_table(session: Session, batch_id: str, *, status: str | None, after: int,
               limit: int) -> tuple[list[ItemRow], str | None]:
    """The items table of the batch page: the rows of `result_rows` reduced to what the
    table shows. Tuples with attributes rather than nested dicts: a template looks an
    attribute up first and a dict key only after that fails, on every cell of every row."""
    params = {"batch_id": batch_id, "after": after, "limit": limit}
    if status:
        params["status"] = status
    rows = session.execute(_result_rows_stmt(bool(status)), params).all()
    return ([_item_row(r) for r in rows],
            str(rows[-1].seq) if len(rows) == limit else None)


def _item_row(r) -> ItemRow:
    if r.result:
        result = orjson.loads(r.result)
        output = result.get("output") or {}
        text = output.get("text") or ("embedding" if output.get("embedding") else "")
        return ItemRow(r.customer_item_id, r.status, r.attempts, result.get("lane") or "",
                       text[:160], result.get("cost_usd"), None)
    error = r.error or {}
    return ItemRow(r.customer_item_id, r.status, r.attempts, None, error.get("message") or "",
                   None, error.get("code"))


@functools.cache
def _result_rows_stmt(with_status: bool):
    stmt = select(Item.seq, Item.customer_item_id, Item.status, Item.result, Item.error,
                  Item.attempts).where(Item.batch_id == bindparam("batch_id"),
                                       Item.seq > bindparam("after"))
    if with_status:
        stmt = stmt.where(Item.status == bindparam("status"))
    return stmt.order_by(Item.seq).limit(bindparam("limit"))
