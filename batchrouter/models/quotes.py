"""Quotes (`qlock_…`): a 10-minute price lock on a manifest (SPEC §1 step 2, §4)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from batchrouter.db import Base, utcnow
from batchrouter.ids import new_id


class Quote(Base):
    __tablename__ = "quotes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("qlock"))
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"),
                                              index=True)
    mode: Mapped[str] = mapped_column(String(8), default="live")
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | accepted
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str | None] = mapped_column(String(40))
    item_count: Mapped[int] = mapped_column(Integer)
    controls: Mapped[dict] = mapped_column(JSON)
    low_micros: Mapped[int] = mapped_column(BigInteger)
    expected_micros: Mapped[int] = mapped_column(BigInteger)
    high_micros: Mapped[int] = mapped_column(BigInteger)
    # Subtotal and fee of the `expected` figure (the headline price).
    provider_subtotal_micros: Mapped[int] = mapped_column(BigInteger)
    fee_micros: Mapped[int] = mapped_column(BigInteger)
    fee_ppm: Mapped[int] = mapped_column(Integer)
    balance_covers: Mapped[bool] = mapped_column(Boolean)
    # Selected and rejected lanes with their locked rates and counts (the receipt of the quote).
    lanes: Mapped[list] = mapped_column(JSON)
    plan: Mapped[list] = mapped_column(JSON)
    assumptions: Mapped[dict] = mapped_column(JSON)
    # Per item, compactly (msgpack): chosen lane index, low/expected/high, fallback ladder.
    selections: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime)
