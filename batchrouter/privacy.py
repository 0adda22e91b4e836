"""Privacy requests (SPEC §10): the public form, the emailed confirmation, and the operator
queue's lifecycle (unconfirmed → open → in_progress → done | rejected) with due dates,
extensions, notes and an email to the requester at every step."""
from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from batchrouter import accounts, tokens
from batchrouter import email as mail
from batchrouter.db import utcnow
from batchrouter.errors import Conflict, Forbidden, NotFound, ValidationFailed
from batchrouter.models import PrivacyRequest, ProcessingRestriction
from batchrouter.records import log_security

KINDS = {
    "access": "access to my data",
    "export": "export of my data",
    "correction": "correction of my data",
    "deletion": "deletion of my data",
    "restriction": "restriction of processing",
    "objection": "objection to processing",
    "withdraw_consent": "withdrawal of consent",
}
STATUSES = ("unconfirmed", "open", "in_progress", "done", "rejected")
ACTIVE = ("open", "in_progress")
CONFIRM_PURPOSE = "privacy-confirm"
MAX_DETAILS = 5000


@dataclass(frozen=True)
class Settings:
    secret: str
    base_url: str
    operator_name: str
    confirm_ttl: int = 24 * 3600
    export_ttl: int = 7 * 24 * 3600
    policy_version: str = ""


@dataclass(frozen=True)
class Operator:
    """Who handles a request in the queue (for notes and the security log)."""

    user_id: str
    email: str
    ip: str | None = None


def add_months(moment: datetime, months: int) -> datetime:
    """Same day `months` later, clamped to the month's last day (31 Jan + 1 → 28/29 Feb)."""
    month0 = moment.month - 1 + months
    year, month = moment.year + month0 // 12, month0 % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _clean(value: str | None, limit: int) -> str | None:
    value = (value or "").strip()
    return value[:limit] or None


def _email(session: Session, request: PrivacyRequest, settings: Settings, subject: str,
           message: str, step: str) -> None:
    mail.queue_email(session, request.email, "privacy_update",
                     {"subject": subject, "message": message, "request_id": request.id,
                      "kind_label": KINDS[request.kind], "status": request.status.replace("_", " "),
                      "due": f"{request.due_at:%d %B %Y}" if request.due_at
                      and request.status in ACTIVE else "",
                      "operator_name": settings.operator_name},
                     idempotency_key=f"privacy/{request.id}/{step}")


def submit(session: Session, settings: Settings, *, kind: str, email: str,
           workspace_name: str | None, details: str | None, submitted_by_id: str | None = None,
           ip: str | None = None) -> PrivacyRequest:
    """Store an unconfirmed request and email the confirmation link to the address given.
    The same happens whether or not the address has an account."""
    if kind not in KINDS:
        raise ValidationFailed("Choose what you would like us to do.", code="invalid_kind")
    email = accounts.normalize_email(email)
    if details and len(details) > MAX_DETAILS:
        raise ValidationFailed(f"Details are limited to {MAX_DETAILS} characters.",
                               code="details_too_long")
    request = PrivacyRequest(kind=kind, email=email, status="unconfirmed",
                             workspace_name=_clean(workspace_name, 120),
                             details=_clean(details, MAX_DETAILS), submitted_by_id=submitted_by_id)
    session.add(request)
    session.flush()
    token = tokens.sign(settings.secret, CONFIRM_PURPOSE, {"r": request.id})
    mail.queue_email(session, email, "privacy_confirm",
                     {"kind_label": KINDS[kind], "hours": settings.confirm_ttl // 3600,
                      "confirm_url": f"{settings.base_url}/privacy/request/confirm/{token}",
                      "operator_name": settings.operator_name},
                     idempotency_key=f"privacy/{request.id}/confirm")
    log_security(session, "privacy_request_submitted", email=email, ip=ip,
                 request_id=request.id, request_kind=kind)
    return request


def request_for_token(session: Session, settings: Settings, token: str) -> PrivacyRequest:
    payload = tokens.unsign(settings.secret, CONFIRM_PURPOSE, token, settings.confirm_ttl)
    request = session.get(PrivacyRequest, payload.get("r"))
    if request is None:
        raise tokens.TokenInvalid("This link is not valid.")
    return request


def confirm(session: Session, settings: Settings, token: str, ip: str | None = None,
            now: datetime | None = None) -> PrivacyRequest:
    """The requester opened the emailed link and confirmed: the request enters the queue,
    due one month after it was received. A second use of the link changes nothing."""
    request = request_for_token(session, settings, token)
    if request.status != "unconfirmed":
        raise tokens.TokenInvalid("This request is already confirmed; we are on it.")
    now = now or utcnow()
    user = accounts.find_user_by_email(session, request.email)
    request.status, request.received_at = "open", now
    request.due_at = add_months(now, 1)
    request.user_id = user.id if user else None
    log_security(session, "privacy_request_confirmed", user_id=request.user_id,
                 email=request.email, ip=ip, request_id=request.id, request_kind=request.kind)
    _email(session, request, settings, "We received your privacy request",
           "Thank you for confirming. Your request is in our queue.", "received")
    return request


def get(session: Session, request_id: str) -> PrivacyRequest:
    request = session.get(PrivacyRequest, request_id)
    if request is None:
        raise NotFound("No such privacy request.", code="privacy_request_not_found")
    return request


def queue(session: Session, status: str | None = None, limit: int = 200) -> list[PrivacyRequest]:
    """Confirmed requests by due date (unconfirmed ones only when asked for)."""
    stmt = select(PrivacyRequest)
    if status:
        stmt = stmt.where(PrivacyRequest.status == status)
    else:
        stmt = stmt.where(PrivacyRequest.status != "unconfirmed")
    return list(session.scalars(stmt.order_by(PrivacyRequest.due_at.is_(None),
                                              PrivacyRequest.due_at, PrivacyRequest.created_at)
                                .limit(limit)))


def is_overdue(request: PrivacyRequest, now: datetime | None = None) -> bool:
    return request.status in ACTIVE and request.due_at is not None \
        and request.due_at < (now or utcnow())


def requests_of(session: Session, email: str) -> list[PrivacyRequest]:
    return list(session.scalars(select(PrivacyRequest).where(PrivacyRequest.email == email)
                                .order_by(PrivacyRequest.created_at.desc())))


def _log(session: Session, kind: str, request: PrivacyRequest, operator: Operator, **details):
    log_security(session, kind, user_id=request.user_id, email=operator.email, ip=operator.ip,
                 request_id=request.id, request_kind=request.kind, operator_id=operator.user_id,
                 **details)


def _require_active(request: PrivacyRequest) -> None:
    if request.status not in ACTIVE:
        raise Conflict(f"This request is {request.status.replace('_', ' ')}.",
                       code="privacy_request_closed")


def start(session: Session, settings: Settings, request: PrivacyRequest,
          operator: Operator) -> None:
    if request.status != "open":
        raise Conflict("Only an open request can be started.", code="privacy_request_not_open")
    request.status = "in_progress"
    _log(session, "privacy_request_started", request, operator)
    _email(session, request, settings, "We are working on your privacy request",
           "Someone is now handling your request.", "started")


def add_note(session: Session, request: PrivacyRequest, operator: Operator, text: str) -> None:
    text = (text or "").strip()
    if not text:
        raise ValidationFailed("Write the note first.", code="empty_note")
    request.notes = [*(request.notes or []), {"at": utcnow().isoformat(timespec="seconds") + "Z",
                                              "by": operator.email, "text": text[:2000]}]
    _log(session, "privacy_request_noted", request, operator)


def extend(session: Session, settings: Settings, request: PrivacyRequest, operator: Operator,
           months: int, reason: str) -> None:
    """Extend the due date once, by one or two months, with a reason the requester is sent."""
    _require_active(request)
    if request.extended_at is not None:
        raise Conflict("The due date was already extended once.", code="already_extended")
    if months not in (1, 2):
        raise ValidationFailed("Extend by one or two months.", code="invalid_extension")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("Give the reason; the requester is told.", code="reason_required")
    request.due_at = add_months(request.due_at, months)
    request.extended_at, request.extension_reason = utcnow(), reason[:2000]
    _log(session, "privacy_request_extended", request, operator, months=months)
    _email(session, request, settings, "We need more time for your privacy request",
           f"We have extended the time to answer by {months} month{'s' if months > 1 else ''}. "
           f"Reason: {reason}", "extended")


def close(session: Session, settings: Settings, request: PrivacyRequest, operator: Operator,
          *, status: str, reply: str, outcome: dict | None = None) -> None:
    """Finish a request (done or rejected) and send the reply."""
    _require_active(request)
    reply = (reply or "").strip()
    if status == "rejected" and not reply:
        raise ValidationFailed("Say why the request is rejected; the requester is told.",
                               code="reason_required")
    request.status, request.closed_at = status, utcnow()
    request.reply = reply or None
    if outcome is not None:
        request.outcome = outcome
    _log(session, f"privacy_request_{status}", request, operator)
    subject = ("Your privacy request is done" if status == "done"
               else "We could not carry out your privacy request")
    _email(session, request, settings, subject, reply or "Your request has been carried out.",
           status)


def is_restricted(session: Session, user_id: str | None) -> bool:
    if not user_id:
        return False
    return bool(session.scalar(select(func.count()).select_from(ProcessingRestriction)
                               .where(ProcessingRestriction.user_id == user_id,
                                      ProcessingRestriction.lifted_at.is_(None))))


def check_not_restricted(session: Session, user_id: str | None) -> None:
    """Refuse new batches while the account's processing is restricted (a privacy request)."""
    if is_restricted(session, user_id):
        raise Forbidden("Processing for this account is restricted at your request; new "
                        "batches are paused until the restriction is lifted.",
                        code="processing_restricted")
