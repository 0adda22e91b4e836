"""What the installation is doing, read from the database (operator page and /metrics)."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from batchrouter.models import Batch, LedgerAccount, OutboxMessage

ITEM_STATES = ("pending", "running", "succeeded", "failed", "cancelled", "expired")


@dataclass
class Snapshot:
    batches: dict[str, int]  # status -> batches
    items: dict[str, int]  # status -> items (from the per-batch counters)
    ledger: dict[str, int]  # account kind -> summed balance (micro-dollars)
    settled: dict[str, int]  # total / subtotal / fee / provider_cost (micro-dollars)
    outbox_pending: int


def snapshot(session: Session) -> Snapshot:
    """Counts by status and money totals; a handful of aggregate queries, no item scan."""
    batches = dict(session.execute(select(Batch.status, func.count())
                                   .group_by(Batch.status)).all())
    columns = [getattr(Batch, state) for state in ITEM_STATES]
    money = [Batch.settled_micros, Batch.settled_subtotal_micros, Batch.settled_fee_micros,
             Batch.provider_cost_micros]
    sums = session.execute(select(*[func.coalesce(func.sum(c), 0) for c in columns + money])
                           ).one()
    items = {state: int(value) for state, value in zip(ITEM_STATES, sums[:len(ITEM_STATES)])}
    settled = dict(zip(("total", "subtotal", "fee", "provider_cost"),
                       (int(v) for v in sums[len(ITEM_STATES):])))
    ledger = {kind: int(total) for kind, total in session.execute(
        select(LedgerAccount.kind, func.coalesce(func.sum(LedgerAccount.balance), 0))
        .group_by(LedgerAccount.kind)).all()}
    pending = session.scalar(select(func.count()).select_from(OutboxMessage)
                             .where(OutboxMessage.enqueued_at.is_(None))) or 0
    return Snapshot({k: int(v) for k, v in batches.items()}, items, ledger, settled, pending)
