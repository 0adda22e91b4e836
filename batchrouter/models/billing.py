"""The double-entry credit ledger (SPEC §8): accounts, transactions, entries, grant lots."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from batchrouter.db import Base, utcnow
from batchrouter.ids import new_id

WORKSPACE_ACCOUNTS = ("available", "reserved", "spent")
SYSTEM_ACCOUNTS = ("stripe", "promo", "revenue")
LOT_KINDS = ("purchase", "promo", "starter")


class LedgerAccount(Base):
    __tablename__ = "ledger_accounts"
    __table_args__ = (UniqueConstraint("workspace_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # NULL for system accounts (stripe, promo, revenue).
    workspace_id: Mapped[str | None] = mapped_column(ForeignKey("workspaces.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    # Cached sum of this account's entries, updated in the same transaction as the entries;
    # ledger.verify_balances() recomputes it from the entries.
    balance: Mapped[int] = mapped_column(BigInteger, default=0)


class LedgerTransaction(Base):
    __tablename__ = "ledger_transactions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("txn"))
    kind: Mapped[str] = mapped_column(String(16))  # grant|reserve|settle|release|refund|reverse
    # Makes every operation idempotent: the same key never posts twice.
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    reason: Mapped[str | None] = mapped_column(String(300))
    created_by_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class LedgerEntry(Base):
    """One insert-only line: a signed amount on one account. A transaction's lines sum to 0."""

    __tablename__ = "ledger_entries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("led"))
    transaction_id: Mapped[str] = mapped_column(ForeignKey("ledger_transactions.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    # Which grant lot this line moves, on workspace accounts (drives spend order and refunds).
    lot_id: Mapped[str | None] = mapped_column(ForeignKey("credit_lots.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CreditLot(Base):
    __tablename__ = "credit_lots"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("lot"))
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    # Unspent credit in this lot (cached like account balances; entries are the record).
    remaining: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    transaction_id: Mapped[str] = mapped_column(ForeignKey("ledger_transactions.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
