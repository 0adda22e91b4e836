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

from batchrouter.db import utcnow
from batchrouter.errors import InsufficientCredits, ValidationFailed
from batchrouter.models import (
    CreditLot,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    Reservation,
    Workspace,
)
from batchrouter.models.billing import LOT_KINDS
from batchrouter.money import to_wire

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


def account_id(session: Session, workspace_id: str, kind: str) -> int | None:
    """Id of a workspace's ledger account, or None before its first posting.

    For read paths: account() creates the row, and a write inside a GET's deferred SQLite
    transaction fails with "database is locked" when a worker holds the write lock."""
    return session.scalar(select(LedgerAccount.id).where(
        LedgerAccount.workspace_id == workspace_id, LedgerAccount.kind == kind))


def _post(session: Session, txn: LedgerTransaction, lines: list[tuple]) -> None:
    """Write the entries of one transaction; they must sum to zero (double entry).

    Balances move with SQL-side increments: system accounts are shared by every workspace, so
    a read-modify-write in Python would lose concurrent updates."""
    if sum(amount for _acct, amount, _lot in lines) != 0:
        raise AssertionError("ledger transaction does not balance")
    for acct, amount, lot_id in lines:
        session.add(LedgerEntry(transaction_id=txn.id, account_id=acct.id, amount=amount,
                                lot_id=lot_id))
        session.execute(update(LedgerAccount).where(LedgerAccount.id == acct.id)
                        .values(balance=LedgerAccount.balance + amount))
        session.expire(acct, ["balance"])
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


def reverse(session: Session, lot_id: str, amount: int, *, kind: str, reason: str,
            idempotency_key: str, created_by_id: str | None = None
            ) -> tuple[LedgerTransaction | None, int]:
    """Take back up to `amount` of a lot's unspent credit to the account that funded it (a
    refund or a dispute). Returns the transaction and what it took: never more than the lot
    still holds, so balances stay non-negative; the caller reports any shortfall."""
    lot = session.get(CreditLot, lot_id)
    lock_workspace(session, lot.workspace_id)
    existing = find_transaction(session, idempotency_key)
    if existing is not None:
        return existing, 0
    session.refresh(lot)
    take = min(amount, lot.remaining)
    if take <= 0:
        return None, 0
    txn = LedgerTransaction(kind=kind, idempotency_key=idempotency_key,
                            workspace_id=lot.workspace_id, reason=reason,
                            created_by_id=created_by_id)
    session.add(txn)
    session.flush()
    _post(session, txn, [(account(session, lot.workspace_id, "available"), -take, lot.id),
                         (account(session, None, GRANT_SOURCE[lot.kind]), take, None)])
    lot.remaining -= take
    return txn, take


def restore(session: Session, lot_id: str, amount: int, *, reason: str,
            idempotency_key: str) -> tuple[LedgerTransaction | None, int]:
    """Give a lot back what a reversal took from it (a dispute decided in our favour: the
    payment stands, so its credit does too): the mirror of `reverse`, from the account that
    funded the lot. Returns the transaction and the amount; once per key."""
    lot = session.get(CreditLot, lot_id)
    lock_workspace(session, lot.workspace_id)
    existing = find_transaction(session, idempotency_key)
    if existing is not None or amount <= 0:
        return existing, 0
    txn = _new_transaction(session, "grant", idempotency_key, lot.workspace_id, reason)
    _post(session, txn, [(account(session, None, GRANT_SOURCE[lot.kind]), -amount, None),
                         (account(session, lot.workspace_id, "available"), amount, lot.id)])
    session.refresh(lot)
    lot.remaining += amount
    return txn, amount


def taken_from_lot(session: Session, txn: LedgerTransaction, lot_id: str) -> int:
    """What a reversal transaction took out of one lot (a positive amount)."""
    return -int(session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
        LedgerEntry.transaction_id == txn.id, LedgerEntry.lot_id == lot_id)) or 0)


def _new_transaction(session: Session, kind: str, key: str, workspace_id: str,
                     reason: str) -> LedgerTransaction:
    txn = LedgerTransaction(kind=kind, idempotency_key=key, workspace_id=workspace_id,
                            reason=reason)
    session.add(txn)
    session.flush()
    return txn


def spendable_lots(session: Session, workspace_id: str) -> list[CreditLot]:
    """Lots with credit left, in the order spending consumes them (SPEC §8): promo and starter
    lots first, earliest expiry first, then purchased ones, oldest first."""
    now = utcnow()
    lots = session.scalars(select(CreditLot).where(
        CreditLot.workspace_id == workspace_id, CreditLot.remaining > 0)).all()
    live = [lot for lot in lots if lot.expires_at is None or lot.expires_at > now]
    return sorted(live, key=lambda lot: (lot.kind == "purchase",
                                         lot.expires_at is None, lot.expires_at or now,
                                         lot.created_at, lot.id))


def reserve(session: Session, workspace_id: str, batch_id: str, amount: int) -> Reservation:
    """Hold `amount` for a batch, or raise InsufficientCredits with the shortfall.

    Serialized per workspace: the lock is the first statement of the transaction, so on
    SQLite it takes the write lock before anything is read."""
    lock_workspace(session, workspace_id)
    existing = _reservation(session, batch_id)
    if existing is not None:
        return existing
    lots = spendable_lots(session, workspace_id)
    usable = sum(lot.remaining for lot in lots)
    if amount > usable:
        raise InsufficientCredits(
            f"This batch needs {to_wire(amount)} USD of credit held (the quote's high "
            f"estimate); {to_wire(usable)} is available.",
            details={"required": to_wire(amount), "available": to_wire(usable),
                     "shortfall": to_wire(amount - usable)})
    txn = _new_transaction(session, "reserve", f"reserve:{batch_id}", workspace_id,
                           f"Hold for batch {batch_id}")
    available, reserved = account(session, workspace_id, "available"), \
        account(session, workspace_id, "reserved")
    allocations, lines, left = {}, [], amount
    for lot in lots:
        if left == 0:
            break
        take = min(lot.remaining, left)
        lot.remaining -= take
        left -= take
        allocations[lot.id] = take
        lines += [(available, -take, lot.id), (reserved, take, lot.id)]
    _post(session, txn, lines)
    reservation = Reservation(workspace_id=workspace_id, batch_id=batch_id, amount=amount,
                              allocations=allocations)
    session.add(reservation)
    session.flush()
    return reservation


def _take(allocations: dict, amount: int) -> list[tuple[str, int]]:
    """Split `amount` across the held lots in their order; the allocations shrink."""
    parts, left = [], amount
    for lot_id in list(allocations):
        if left == 0:
            break
        take = min(allocations[lot_id], left)
        if take:
            parts.append((lot_id, take))
            allocations[lot_id] -= take
            left -= take
    return parts


def _reservation(session: Session, batch_id: str) -> Reservation | None:
    return session.scalars(select(Reservation)
                           .where(Reservation.batch_id == batch_id)).first()


def _held(reservation: Reservation) -> int:
    return reservation.amount - reservation.settled - reservation.released


def _move_held(session: Session, txn: LedgerTransaction, reservation: Reservation,
               amount: int, to: LedgerAccount) -> list[tuple[str, int]]:
    """Post `amount` from the reservation's lots (in their order) to account `to`."""
    allocations = dict(reservation.allocations)
    reserved = account(session, reservation.workspace_id, "reserved")
    parts = _take(allocations, amount)
    _post(session, txn, [line for lot_id, take in parts
                         for line in ((reserved, -take, lot_id), (to, take, lot_id))])
    reservation.allocations = allocations
    return parts


def settle(session: Session, workspace_id: str, batch_id: str, unit_id: str,
           amount: int) -> LedgerTransaction | None:
    """Move what a work unit actually cost from reserved to spent, once per unit.

    Never more than what is still held: settlement is capped by the reservation."""
    lock_workspace(session, workspace_id)
    key = f"settle:{batch_id}:{unit_id}"
    existing = find_transaction(session, key)
    if existing is not None:
        return existing
    reservation = _reservation(session, batch_id)
    amount = min(amount, _held(reservation))
    txn = _new_transaction(session, "settle", key, workspace_id,
                           f"Usage of work unit {unit_id}")
    _move_held(session, txn, reservation, amount, account(session, workspace_id, "spent"))
    reservation.settled += amount
    return txn


def release(session: Session, workspace_id: str, batch_id: str) -> LedgerTransaction | None:
    """Return whatever the batch still holds to available credit (terminal batches)."""
    lock_workspace(session, workspace_id)
    key = f"release:{batch_id}"
    existing = find_transaction(session, key)
    if existing is not None:
        return existing
    reservation = _reservation(session, batch_id)
    if reservation is None:
        return None
    held = _held(reservation)
    txn = _new_transaction(session, "release", key, workspace_id,
                           f"Release of batch {batch_id}")
    parts = _move_held(session, txn, reservation, held,
                       account(session, workspace_id, "available"))
    for lot_id, take in parts:  # the credit is spendable again from the lots it came from
        session.get(CreditLot, lot_id).remaining += take
    reservation.released += held
    reservation.closed_at = utcnow()
    return txn


def open_reservations(session: Session) -> list[Reservation]:
    return list(session.scalars(select(Reservation).where(Reservation.closed_at.is_(None))))


def balances(session: Session, workspace_id: str) -> Balances:
    """Available, reserved and spent credit of a workspace, in micro-dollars.

    Available excludes lots past their expiry even before expire_lots() has posted their
    expiry, so what a workspace is shown is what a batch can reserve."""
    rows = session.execute(select(LedgerAccount.kind, LedgerAccount.balance)
                           .where(LedgerAccount.workspace_id == workspace_id)).all()
    by_kind = {kind: bal for kind, bal in rows}
    expired = session.scalar(select(func.coalesce(func.sum(CreditLot.remaining), 0)).where(
        CreditLot.workspace_id == workspace_id, CreditLot.remaining > 0,
        CreditLot.expires_at.is_not(None), CreditLot.expires_at <= utcnow()))
    return Balances(by_kind.get("available", 0) - int(expired or 0),
                    by_kind.get("reserved", 0), by_kind.get("spent", 0))


def expire_lots(session: Session) -> int:
    """Post the expiry of every lot past its date that still holds credit (periodic job)."""
    lots = session.scalars(select(CreditLot).where(
        CreditLot.remaining > 0, CreditLot.expires_at.is_not(None),
        CreditLot.expires_at <= utcnow())).all()
    for lot in lots:
        lock_workspace(session, lot.workspace_id)
        session.refresh(lot)
        if lot.remaining <= 0:
            continue
        txn = _new_transaction(session, "expire", f"expire:{lot.id}", lot.workspace_id,
                               f"Expiry of {lot.kind} credit")
        _post(session, txn, [(account(session, lot.workspace_id, "available"), -lot.remaining,
                              lot.id),
                             (account(session, None, GRANT_SOURCE[lot.kind]), lot.remaining,
                              None)])
        lot.remaining = 0
    return len(lots)


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


def daily_spend(session: Session, workspace_id: str, days: int = 30) -> list[tuple[str, int]]:
    """Settled spend per UTC day for the last `days` days, oldest first (zeros included)."""
    from datetime import timedelta

    today = utcnow().date()
    since = today - timedelta(days=days - 1)
    spent_id = account_id(session, workspace_id, "spent")
    rows = session.execute(select(LedgerEntry.created_at, LedgerEntry.amount).where(
        LedgerEntry.account_id == spent_id, LedgerEntry.amount > 0,
        LedgerEntry.created_at >= datetime.combine(since, datetime.min.time()))).all()
    totals: dict = {}
    for created_at, amount in rows:
        totals[created_at.date()] = totals.get(created_at.date(), 0) + amount
    return [((since + timedelta(days=i)).isoformat(), totals.get(since + timedelta(days=i), 0))
            for i in range(days)]
