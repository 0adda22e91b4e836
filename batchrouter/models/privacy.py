"""Consent, analytics, privacy requests, support messages, API events and retention runs
(SPEC §10)."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Boolean, Date, DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from batchrouter.db import Base, utcnow
from batchrouter.ids import new_id


class ConsentRecord(Base):
    """One cookie choice as made (append-only): the latest row per consent id is in force."""

    __tablename__ = "consent_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Anonymous id stored in the essential consent cookie; the same browser keeps it.
    consent_id: Mapped[str] = mapped_column(String(40), index=True)
    user_id: Mapped[str | None] = mapped_column(String(40), index=True)
    essential: Mapped[bool] = mapped_column(Boolean, default=True)
    analytics: Mapped[bool] = mapped_column(Boolean, default=False)
    policy_version: Mapped[str] = mapped_column(String(40))
    # accept_all | reject_all | customize | withdraw | privacy_request
    action: Mapped[str] = mapped_column(String(20))
    # The analytics visitor id this browser carried (so its analytics can be erased).
    visitor_id: Mapped[str | None] = mapped_column(String(40), index=True)
    user_agent_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class AnalyticsPageView(Base):
    """Page views per route per day for one pseudonymous visitor (only with consent)."""

    __tablename__ = "analytics_page_views"
    __table_args__ = (UniqueConstraint("day", "route", "visitor_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date, index=True)
    route: Mapped[str] = mapped_column(String(120))
    visitor_id: Mapped[str] = mapped_column(String(40), index=True)
    views: Mapped[int] = mapped_column(Integer, default=0)


class AnalyticsEvent(Base):
    """Activation events ("signed_up", "first_batch") per day for one visitor."""

    __tablename__ = "analytics_events"
    __table_args__ = (UniqueConstraint("day", "name", "visitor_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date, index=True)
    name: Mapped[str] = mapped_column(String(40))
    visitor_id: Mapped[str] = mapped_column(String(40), index=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class PrivacyRequest(Base):
    """A data-subject request: unconfirmed → open → in_progress → done | rejected."""

    __tablename__ = "privacy_requests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("prq"))
    kind: Mapped[str] = mapped_column(String(20))
    email: Mapped[str] = mapped_column(String(320), index=True)
    workspace_name: Mapped[str | None] = mapped_column(String(120))
    details: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="unconfirmed", index=True)
    # Matched on confirmation; never shown to the requester (no account enumeration).
    user_id: Mapped[str | None] = mapped_column(String(40), index=True)
    submitted_by_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    received_at: Mapped[datetime | None] = mapped_column(DateTime)
    due_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    extended_at: Mapped[datetime | None] = mapped_column(DateTime)
    extension_reason: Mapped[str | None] = mapped_column(Text)
    # [{"at": iso, "by": email, "text": …}] — appended, never edited.
    notes: Mapped[list] = mapped_column(JSON, default=list)
    # What the action did: kept classes with reasons, export file, counts.
    outcome: Mapped[dict | None] = mapped_column(JSON)
    export_key: Mapped[str | None] = mapped_column(String(300))
    export_ready_at: Mapped[datetime | None] = mapped_column(DateTime)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime)
    reply: Mapped[str | None] = mapped_column(Text)


class ProcessingRestriction(Base):
    """While present (and not lifted), the account may not start new batches."""

    __tablename__ = "processing_restrictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(40), index=True)
    request_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    lifted_at: Mapped[datetime | None] = mapped_column(DateTime)


class SupportMessage(Base):
    """A message from the contact form (append-only)."""

    __tablename__ = "support_messages"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("sup"))
    email: Mapped[str] = mapped_column(String(320), index=True)
    workspace: Mapped[str | None] = mapped_column(String(120))
    batch_id: Mapped[str | None] = mapped_column(String(40))
    error_reference: Mapped[str | None] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(String(40), index=True)
    ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class ApiEvent(Base):
    """One API request: what was called and how it went; never bodies or secrets."""

    __tablename__ = "api_events"
    __table_args__ = (Index("ix_api_events_workspace_id_created_at", "workspace_id",
                            "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(300))
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[str | None] = mapped_column(String(40))
    workspace_id: Mapped[str | None] = mapped_column(String(40))
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class RateLimitHit(Base):
    """A request refused with 429 (console throttles and API limits alike)."""

    __tablename__ = "rate_limit_hits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(300))
    ip: Mapped[str | None] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(40))
    workspace_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class RetentionRun(Base):
    """One pass of the retention job: the cut-offs it used and what it removed."""

    __tablename__ = "retention_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    policy: Mapped[dict] = mapped_column(JSON, default=dict)
    removed: Mapped[dict] = mapped_column(JSON, default=dict)
