"""What a workspace sees of its ledger: balance summary, paged transactions, CSV export."""
from __future__ import annotations

import base64
import csv
import io
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from batchrouter import ledger, money
from batchrouter.db import iso, utcnow
from batchrouter.errors import InvalidRequest
from batchrouter.models import LedgerAccount, LedgerEntry, LedgerTransaction, Purchase

KINDS = ("grant", "reserve", "settle", "release", "expire", "refund", "reverse")
# CSV cells a spreadsheet would run as a formula (OWASP CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spent_this_month(session: Session, workspace_id: str) -> int:
    start = utcnow().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    spent_id = ledger.account_id(session, workspace_id, "spent")
    return int(session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
        LedgerEntry.account_id == spent_id, LedgerEntry.created_at >= start)) or 0)


def links(key: str) -> dict:
    """The batch or purchase a transaction belongs to, from its idempotency key."""
    head, _, rest = key.partition(":")
    if head in ("reserve", "release", "settle"):
        return {"batch_id": rest.split(":")[0]}
    if head in ("refund", "stripe-refund", "stripe-dispute", "stripe-dispute-won"):
        return {"purchase_id": rest.split(":")[0]}
    if head == "stripe-session":
        return {"session_id": rest}
    return {}


def encode_cursor(txn: LedgerTransaction) -> str:
    raw = f"{txn.created_at.isoformat()}|{txn.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, txn_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), txn_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("cursor is the next_cursor of the previous page.",
                             code="invalid_cursor") from exc


def parse_filters(args) -> dict:
    """kind, batch_id, since, until (ISO dates) from query arguments; 400 on nonsense."""
    filters = {}
    kind = (args.get("kind") or "").strip()
    if kind:
        if kind not in KINDS:
            raise InvalidRequest(f"kind is one of {', '.join(KINDS)}.", code="invalid_filter")
        filters["kind"] = kind
    if (args.get("batch_id") or "").strip():
        filters["batch_id"] = args["batch_id"].strip()
    for name in ("since", "until"):
        value = (args.get(name) or "").strip()
        if value:
            try:
                filters[name] = datetime.fromisoformat(value.replace("Z", ""))
            except ValueError as exc:
                raise InvalidRequest(f"{name} is an ISO date like 2026-11-01.",
                                     code="invalid_filter") from exc
    return filters


def _query(workspace_id: str, filters: dict):
    stmt = select(LedgerTransaction).where(LedgerTransaction.workspace_id == workspace_id)
    if filters.get("kind"):
        stmt = stmt.where(LedgerTransaction.kind == filters["kind"])
    if filters.get("batch_id"):
        b = filters["batch_id"]
        stmt = stmt.where(or_(LedgerTransaction.idempotency_key.in_([f"reserve:{b}",
                                                                     f"release:{b}"]),
                              LedgerTransaction.idempotency_key.like(f"settle:{b}:%")))
    if filters.get("since"):
        stmt = stmt.where(LedgerTransaction.created_at >= filters["since"])
    if filters.get("until"):
        stmt = stmt.where(LedgerTransaction.created_at < filters["until"])
    return stmt.order_by(LedgerTransaction.created_at.desc(), LedgerTransaction.id.desc())


def page(session: Session, workspace_id: str, filters: dict, *, cursor: str | None = None,
         limit: int = 50) -> tuple[list[dict], str | None]:
    """Newest first; next_cursor continues after the last row (None on the last page)."""
    stmt = _query(workspace_id, filters)
    if cursor:
        stamp, txn_id = decode_cursor(cursor)
        stmt = stmt.where(or_(LedgerTransaction.created_at < stamp,
                              (LedgerTransaction.created_at == stamp)
                              & (LedgerTransaction.id < txn_id)))
    txns = list(session.scalars(stmt.limit(limit + 1)))
    more = len(txns) > limit
    txns = txns[:limit]
    return rows(session, workspace_id, txns), encode_cursor(txns[-1]) if more else None


def rows(session: Session, workspace_id: str, txns: list[LedgerTransaction]) -> list[dict]:
    """Each transaction with what it moved on the workspace's three accounts."""
    if not txns:
        return []
    moved = session.execute(
        select(LedgerEntry.transaction_id, LedgerAccount.kind, func.sum(LedgerEntry.amount))
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .where(LedgerEntry.transaction_id.in_([t.id for t in txns]),
               LedgerAccount.workspace_id == workspace_id)
        .group_by(LedgerEntry.transaction_id, LedgerAccount.kind)).all()
    deltas: dict = {}
    for txn_id, kind, amount in moved:
        deltas.setdefault(txn_id, {})[kind] = int(amount)
    sessions = [links(t.idempotency_key).get("session_id") for t in txns]
    purchases = dict(session.execute(select(Purchase.stripe_session_id, Purchase.id).where(
        Purchase.stripe_session_id.in_([s for s in sessions if s]))).all()) \
        if any(sessions) else {}
    out = []
    for txn in txns:
        link = links(txn.idempotency_key)
        d = deltas.get(txn.id, {})
        out.append({"id": txn.id, "object": "ledger_transaction", "kind": txn.kind,
                    "reason": txn.reason, "created_at": iso(txn.created_at),
                    "available_change": money.to_wire(d.get("available", 0)),
                    "reserved_change": money.to_wire(d.get("reserved", 0)),
                    "spent_change": money.to_wire(d.get("spent", 0)),
                    "batch_id": link.get("batch_id"),
                    "purchase_id": link.get("purchase_id")
                    or purchases.get(link.get("session_id"))})
    return out


def safe_cell(value) -> str:
    """A CSV cell no spreadsheet runs as a formula; plain numbers stay numbers."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS):
        try:
            money.parse(text, allow_negative=True)
            return text
        except money.MoneyFormatError:
            return "'" + text
    return text


CSV_COLUMNS = ("created_at", "id", "kind", "reason", "available_change", "reserved_change",
               "spent_change", "batch_id", "purchase_id")


def export_csv(session: Session, workspace_id: str, filters: dict, limit: int = 100_000):
    """Yield the CSV text in chunks (every matching transaction, newest first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    cursor, written = None, 0
    while written < limit:
        batch, cursor = page(session, workspace_id, filters, cursor=cursor, limit=500)
        for row in batch:
            writer.writerow([safe_cell(row[c]) for c in CSV_COLUMNS])
        written += len(batch)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if cursor is None:
            break
