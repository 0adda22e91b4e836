"""Support messages from the contact form (SPEC §10 records) and the operator's audit-log
search over the security log."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from batchrouter import accounts
from batchrouter import email as mail
from batchrouter.errors import ValidationFailed
from batchrouter.models import ErrorReport, SecurityEvent, SupportMessage, User
from batchrouter.records import log_security

MAX_MESSAGE = 5000


def _field(value: str | None, limit: int) -> str | None:
    return (value or "").strip()[:limit] or None


def submit(session: Session, *, email: str, subject: str, message: str, workspace: str | None,
           batch_id: str | None, error_reference: str | None, user_id: str | None,
           ip: str | None, operator_email: str) -> SupportMessage:
    """Store the message and tell the operator a new one arrived."""
    email = accounts.normalize_email(email)
    subject, message = (subject or "").strip(), (message or "").strip()
    if not subject or not message:
        raise ValidationFailed("Give a subject and describe the problem.", code="missing_fields")
    if len(message) > MAX_MESSAGE:
        raise ValidationFailed(f"Messages are limited to {MAX_MESSAGE} characters.",
                               code="message_too_long")
    record = SupportMessage(email=email, subject=subject[:200], message=message,
                            workspace=_field(workspace, 120), batch_id=_field(batch_id, 40),
                            error_reference=_field(error_reference, 40), user_id=user_id, ip=ip)
    session.add(record)
    session.flush()
    mail.queue_email(session, operator_email, "privacy_update",
                     {"subject": f"Support message: {record.subject}",
                      "message": f"From {email}. Read it on the operator support page.",
                      "request_id": record.id, "kind_label": "support", "status": "new",
                      "due": "", "operator_name": "BatchRouter"},
                     idempotency_key=f"support/{record.id}")
    log_security(session, "support_message", user_id=user_id, email=email, ip=ip,
                 message_id=record.id)
    return record


def recent(session: Session, limit: int = 100, query: str | None = None) -> list[SupportMessage]:
    stmt = select(SupportMessage)
    if query:
        like = f"%{query}%"
        stmt = stmt.where(or_(SupportMessage.email.ilike(like), SupportMessage.batch_id == query,
                              SupportMessage.error_reference == query,
                              SupportMessage.workspace.ilike(like)))
    return list(session.scalars(stmt.order_by(SupportMessage.created_at.desc()).limit(limit)))


def audit_log(session: Session, *, workspace_id: str | None = None, user: str | None = None,
              kind: str | None = None, since: datetime | None = None,
              until: datetime | None = None, limit: int = 200) -> list[SecurityEvent]:
    """Security events filtered by workspace, user (id or email), action and time."""
    stmt = select(SecurityEvent)
    if workspace_id:
        stmt = stmt.where(SecurityEvent.workspace_id == workspace_id)
    if user:
        if "@" in user:
            ids = select(User.id).where(User.email == user.strip().lower())
            stmt = stmt.where(or_(SecurityEvent.email == user.strip().lower(),
                                  SecurityEvent.user_id.in_(ids)))
        else:
            stmt = stmt.where(SecurityEvent.user_id == user.strip())
    if kind:
        stmt = stmt.where(SecurityEvent.kind == kind)
    if since:
        stmt = stmt.where(SecurityEvent.created_at >= since)
    if until:
        stmt = stmt.where(SecurityEvent.created_at < until)
    return list(session.scalars(stmt.order_by(SecurityEvent.created_at.desc(),
                                              SecurityEvent.id.desc()).limit(limit)))


def audit_kinds(session: Session) -> list[str]:
    return sorted(session.scalars(select(SecurityEvent.kind).distinct()))


def recent_errors(session: Session, path: str | None = None, limit: int = 50) -> list[ErrorReport]:
    """Latest error references, optionally those whose path starts with `path`."""
    stmt = select(ErrorReport)
    if path:
        stmt = stmt.where(ErrorReport.path.startswith(path))
    return list(session.scalars(stmt.order_by(ErrorReport.created_at.desc()).limit(limit)))
