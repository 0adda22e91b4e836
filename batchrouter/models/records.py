"""Append-only records: security log, error references, email messages (SPEC §10)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from batchrouter.db import Base, utcnow
from batchrouter.ids import new_id


class SecurityEvent(Base):
    __tablename__ = "security_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("sec"))
    kind: Mapped[str] = mapped_column(String(48), index=True)
    user_id: Mapped[str | None] = mapped_column(String(40), index=True)
    workspace_id: Mapped[str | None] = mapped_column(String(40), index=True)
    # The account email as typed on a failed sign-in (the user may not exist).
    email: Mapped[str | None] = mapped_column(String(320))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class ErrorReport(Base):
    """A 5xx the user saw; its id is the `error_reference` the operator looks up."""

    __tablename__ = "error_reports"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("err"))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    status: Mapped[int] = mapped_column(Integer)
    exception: Mapped[str] = mapped_column(String(300))
    traceback: Mapped[str] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(40))
    workspace_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class EmailMessage(Base):
    """Every email the app sends; without Resend it stays here as the local outbox."""

    __tablename__ = "email_messages"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("eml"))
    to: Mapped[str] = mapped_column(String(320), index=True)
    subject: Mapped[str] = mapped_column(String(300))
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    template: Mapped[str] = mapped_column(String(64))
    # Sent to Resend as Idempotency-Key so a retried job never sends twice.
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|sent|outbox|failed
    provider_id: Mapped[str | None] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    # From Resend's signed delivery webhooks: delivered, bounced, complained, delayed…
    delivery_status: Mapped[str | None] = mapped_column(String(32))
    delivery_event_at: Mapped[datetime | None] = mapped_column(DateTime)
