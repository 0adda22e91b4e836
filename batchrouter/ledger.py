"""Double-entry credits in micro-dollars (SPEC §8).

Every operation is one `LedgerTransaction` whose entries sum to zero, keyed by an idempotency
key so that a retried job posts once. Workspace accounts hold non-negative balances; system
accounts (stripe, promo, revenue) are the other side of grants and spending.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from batchrouter.errors import ValidationFailed
from batchrouter.models import CreditLot, LedgerAccount, LedgerEntry, LedgerTransaction, Workspace
from batchrouter.models.billing import LOT_KINDS

# Which system account funds a grant of each lot kind.
GRANT_SOURCE = {"purchase": "stripe", "promo": "promo", "starter": "promo"}


@dataclass(frozen=True)
class Balances:
    available: int
    reserved: int
    spent: int


def lock_workspace(session: Session, workspace_id: str) -> None:
    """Serialize ledger writers of one workspace until this transaction ends.

    The UPDATE takes a row lock on PostgreSQL and the database write lock on SQLite, so the
    balance read that follows cannot interleave with another reservation.
    """
    session.execute(update(Workspace).where(Workspace.id == workspace_id)
                    .values(lock_version=Workspace.lock_version + 1))


def account(session: Session, workspace_id: str | None, kind: str) -> LedgerAccount:
    """The ledger account of a workspace (or the system, when workspace_id is None)."""
    stmt = select(LedgerAccount).where(LedgerAccount.kind == kind)
    stmt = stmt.where(LedgerAccount.workspace_id.is_(None) if workspace_id is None
                      else LedgerAccount.workspace_id == workspace_id)
    found = session.scalars(stmt).first()
    if found is None:
        found = LedgerAccount(workspace_id=workspace_id, kind=kind, balance=0)
        session.add(found)
        session.flush()
    return found


def _post(session: Session, txn: LedgerTransaction, lines: list[tuple]) -> None:
    """Write the entries of one transaction; they must sum to zero (double entry)."""
    if sum(amount for _acct, amount, _lot in lines) != 0:
        raise AssertionError("ledger transaction does not balance")
    for acct, amount, lot_id in lines:
        session.add(LedgerEntry(transaction_id=txn.id, account_id=acct.id, amount=amount,
                                lot_id=lot_id))
        acct.balance += amount
        if acct.workspace_id is not None and acct.balance < 0:
            raise AssertionError(f"{acct.kind} balance would go negative")


def find_transaction(session: Session, idempotency_key: str) -> LedgerTransaction | None:
    return session.scalars(select(LedgerTransaction)
                           .where(LedgerTransaction.idempotency_key == idempotency_key)).first()


def grant(session: Session, workspace_id: str, amount: int, *, kind: str, reason: str,
          idempotency_key: str, expires_at: datetime | None = None,
          created_by_id: str | None = None) -> LedgerTransaction:
    """Add credits as a new lot of `kind`; posting the same key twice grants once."""
    if kind not in LOT_KINDS:
        raise ValidationFailed(f"unknown grant kind {kind!r}")
    if amount <= 0:
        raise ValidationFailed("A grant must be a positive amount.", code="invalid_amount")
    lock_workspace(session, workspace_id)
    existing = find_transaction(session, idempotency_key)
    if existing is not None:
        return existing
    txn = LedgerTransaction(kind="grant", idempotency_key=idempotency_key,
                            workspace_id=workspace_id, reason=reason, created_by_id=created_by_id)
    session.add(txn)
    session.flush()
    lot = CreditLot(workspace_id=workspace_id, kind=kind, amount=amount, remaining=amount,
                    expires_at=expires_at, transaction_id=txn.id)
    session.add(lot)
    session.flush()
    _post(session, txn, [(account(session, None, GRANT_SOURCE[kind]), -amount, None),
                         (account(session, workspace_id, "available"), amount, lot.id)])
    return txn


def balances(session: Session, workspace_id: str) -> Balances:
    """Available, reserved and spent credit of a workspace, in micro-dollars."""
    rows = session.execute(select(LedgerAccount.kind, LedgerAccount.balance)
                           .where(LedgerAccount.workspace_id == workspace_id)).all()
    by_kind = {kind: bal for kind, bal in rows}
    return Balances(by_kind.get("available", 0), by_kind.get("reserved", 0),
                    by_kind.get("spent", 0))


def verify_balances(session: Session) -> list[str]:
    """Recompute every account from its entries; return the accounts whose cache disagrees."""
    sums = dict(session.execute(select(LedgerEntry.account_id, func.sum(LedgerEntry.amount))
                                .group_by(LedgerEntry.account_id)).all())
    problems = []
    for acct in session.scalars(select(LedgerAccount)):
        if int(sums.get(acct.id) or 0) != acct.balance:
            problems.append(f"{acct.workspace_id}/{acct.kind}")
        if acct.workspace_id is not None and acct.balance < 0:
            problems.append(f"{acct.workspace_id}/{acct.kind} negative")
    unbalanced = session.execute(select(LedgerEntry.transaction_id)
                                 .group_by(LedgerEntry.transaction_id)
                                 .having(func.sum(LedgerEntry.amount) != 0)).scalars().all()
    problems.extend(f"transaction {t} does not sum to zero" for t in unbalanced)
    return problems
