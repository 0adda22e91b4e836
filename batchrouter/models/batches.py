"""Batches, work units and items (SPEC §5); per-batch counters live on the batch row."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from batchrouter.db import Base, utcnow
from batchrouter.ids import new_id

BATCH_TERMINAL = ("completed", "failed", "cancelled", "expired")
ITEM_TERMINAL = ("succeeded", "failed", "cancelled", "expired")
UNIT_TERMINAL = ("completed", "cancelled", "expired")


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_workspace_id_id", "workspace_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("bat"))
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    mode: Mapped[str] = mapped_column(String(8), default="live")
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    quote_id: Mapped[str] = mapped_column(ForeignKey("quotes.id"), unique=True)
    input_file_id: Mapped[str | None] = mapped_column(String(40))
    controls: Mapped[dict] = mapped_column(JSON)
    metadata_: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    webhook: Mapped[dict | None] = mapped_column(JSON)
    created_by_key_id: Mapped[str | None] = mapped_column(String(40))
    # Counters, updated in the same transaction as the items they count (no GROUP BY when
    # the progress fragment polls).
    total: Mapped[int] = mapped_column(Integer)
    pending: Mapped[int] = mapped_column(Integer)
    running: Mapped[int] = mapped_column(Integer, default=0)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    cancelled: Mapped[int] = mapped_column(Integer, default=0)
    expired: Mapped[int] = mapped_column(Integer, default=0)
    units_total: Mapped[int] = mapped_column(Integer, default=0)
    units_done: Mapped[int] = mapped_column(Integer, default=0)
    quoted_low_micros: Mapped[int] = mapped_column(BigInteger)
    quoted_expected_micros: Mapped[int] = mapped_column(BigInteger)
    quoted_high_micros: Mapped[int] = mapped_column(BigInteger)
    reserved_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    # Settled amounts (what the customer pays) and what providers reported costing us.
    settled_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    settled_subtotal_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    settled_fee_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    provider_cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    error_summary: Mapped[dict | None] = mapped_column(JSON)
    results_file_id: Mapped[str | None] = mapped_column(String(40))
    errors_file_id: Mapped[str | None] = mapped_column(String(40))
    sla_deadline: Mapped[datetime] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WorkUnit(Base):
    """Items of one batch on one lane: one provider batch, or one chunk of sync calls."""

    __tablename__ = "work_units"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("wu"))
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"),
                                          index=True)
    lane: Mapped[str] = mapped_column(String(160))
    offering_id: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(80))
    provider_model_id: Mapped[str] = mapped_column(String(120))
    mode: Mapped[str] = mapped_column(String(8))
    item_count: Mapped[int] = mapped_column(Integer)
    # pending → running (sync) / submitted (native batch) → completed | cancelled | expired
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    handle: Mapped[dict | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A worker owns the unit until lease_until; the sweeper re-queues units whose lease lapsed.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    leased_by: Mapped[str | None] = mapped_column(String(120))
    settled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Item(Base):
    __tablename__ = "items"
    # Four B-trees, each paid for by every create: keep it at that (reference B3). Customer
    # ids are unique per batch by preflight; feedback finds one through the (batch_id, seq)
    # range.
    __table_args__ = (UniqueConstraint("batch_id", "seq"),
                      Index("ix_items_work_unit_id_status", "work_unit_id", "status"),
                      Index("ix_items_batch_id_status_seq", "batch_id", "status", "seq"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    work_unit_id: Mapped[str] = mapped_column(ForeignKey("work_units.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    customer_item_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(12), default="pending")
    # The manifest line as received (the provider request is built from it at dispatch).
    line: Mapped[bytes] = mapped_column(LargeBinary)
    quoted_lane: Mapped[int] = mapped_column(SmallInteger)  # index into the quote's lanes
    lane: Mapped[int] = mapped_column(SmallInteger)  # where it runs now (fallbacks move it)
    ladder: Mapped[list] = mapped_column(JSON)
    low_micros: Mapped[int] = mapped_column(BigInteger)
    expected_micros: Mapped[int] = mapped_column(BigInteger)
    high_micros: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    # Every attempt: lane, provider ids, timing, usage, provider cost, our price, outcome.
    attempt_log: Mapped[list] = mapped_column(JSON, default=list)
    result: Mapped[str | None] = mapped_column(Text)  # the results-file line (JSON)
    error: Mapped[dict | None] = mapped_column(JSON)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    charged_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    charged_subtotal_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    provider_cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class Reservation(Base):
    """Credits held for a batch; `allocations` remembers which grant lots fund it."""

    __tablename__ = "reservations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("rsv"))
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    batch_id: Mapped[str] = mapped_column(String(40), unique=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    settled: Mapped[int] = mapped_column(BigInteger, default=0)
    released: Mapped[int] = mapped_column(BigInteger, default=0)
    allocations: Mapped[dict] = mapped_column(JSON)  # lot id -> micro-dollars still held
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime)


class Feedback(Base):
    __tablename__ = "item_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(40), index=True)
    batch_id: Mapped[str] = mapped_column(String(40), index=True)
    item_id: Mapped[str] = mapped_column(String(40), index=True)
    provider: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(80))
    score: Mapped[int] = mapped_column(SmallInteger)
    label: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(String(2000))
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
