"""Stripe credit purchases, received Stripe events, per-workspace billing settings and
reconciliation runs (SPEC §8)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from batchrouter.db import Base, utcnow
from batchrouter.ids import new_id

# open → paid → granted, or open → expired | failed. A granted purchase may later be
# (partly) reversed by a refund or dispute; `reversed_amount` says how much.
PURCHASE_STATES = ("open", "paid", "granted", "expired", "failed")


class Purchase(Base):
    """One Stripe Checkout Session for one credit pack."""

    __tablename__ = "purchases"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("pur"))
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    pack_id: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int] = mapped_column(BigInteger)  # credit, micro-dollars
    price_cents: Mapped[int] = mapped_column(BigInteger)  # what Stripe charges, USD cents
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    stripe_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    checkout_url: Mapped[str | None] = mapped_column(String(2000))
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    receipt_url: Mapped[str | None] = mapped_column(String(2000))
    grant_transaction_id: Mapped[str | None] = mapped_column(String(40))
    # Credit taken back by refunds and disputes (micro-dollars).
    reversed_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    paid_at: Mapped[datetime | None] = mapped_column(DateTime)
    granted_at: Mapped[datetime | None] = mapped_column(DateTime)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime)  # expired or failed


class StripeEvent(Base):
    """Every verified Stripe event we processed, keyed by Stripe's event id (de-duplication)."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(80))
    purchase_id: Mapped[str | None] = mapped_column(String(40), index=True)
    outcome: Mapped[str | None] = mapped_column(String(300))
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WorkspaceBilling(Base):
    """Billing settings and state of one workspace (a row appears on first use)."""

    __tablename__ = "workspace_billing"

    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"),
                                              primary_key=True)
    billing_email: Mapped[str | None] = mapped_column(String(320))
    # Warn below this available balance (micro-dollars); NULL = the installation default.
    low_balance_threshold: Mapped[int | None] = mapped_column(BigInteger)
    # Set when the low-balance email went out; cleared when the balance is back above.
    low_balance_notified_at: Mapped[datetime | None] = mapped_column(DateTime)
    # A refund or dispute arrived from Stripe: an operator should look at this workspace.
    flagged_at: Mapped[datetime | None] = mapped_column(DateTime)
    flag_reason: Mapped[str | None] = mapped_column(String(300))


class ReconciliationRun(Base):
    __tablename__ = "reconciliation_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16), default="running")  # ok|problems|failed|skipped
    sessions_checked: Mapped[int] = mapped_column(Integer, default=0)
    grants_applied: Mapped[int] = mapped_column(Integer, default=0)
    # [{"kind": ..., "purchase_id"?, "session_id"?, "workspace_id"?, "message": ...}]
    findings: Mapped[list] = mapped_column(JSON, default=list)
