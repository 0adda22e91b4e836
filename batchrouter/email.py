"""Transactional email: rows first, sending in an RQ job (Resend, or the local outbox).

`queue_email` writes the message and an outbox row in the caller's transaction, so an email
is sent if and only if the change that wants it commits. `deliver` runs in the job.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

import resend
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from batchrouter import queue
from batchrouter.config import ROOT
from batchrouter.db import utcnow
from batchrouter.models import EmailMessage

_LOADER = FileSystemLoader(str(ROOT / "templates" / "email"))
_ENV = Environment(loader=_LOADER, undefined=StrictUndefined, autoescape=False,
                   keep_trailing_newline=True)
_HTML_ENV = Environment(loader=_LOADER, undefined=StrictUndefined, autoescape=True)
SEND_JOB = "jobs.email.send_email"


@dataclass(frozen=True)
class Transport:
    """How to send: a Resend key (and optional base URL), or neither for the local outbox."""

    api_key: str | None
    api_url: str | None
    sender: str


class PermanentEmailError(Exception):
    """Resend refused the message for a reason a retry will not fix."""


class TransientEmailError(Exception):
    """Sending failed for a reason a later retry may fix (outage, timeout, 429, 5xx)."""


def render(template: str, context: dict) -> tuple[str, str, str]:
    """Subject, plain text and HTML of a template.

    Every email has `<name>.txt` (first line `Subject: …`) and `<name>.html` (extends the one
    `_layout.html`); both end with the shared `_footer.txt`."""
    raw = _ENV.get_template(f"{template}.txt").render(**context)
    first, _, body = raw.partition("\n")
    subject = first.removeprefix("Subject:").strip()
    footer = _ENV.get_template("_footer.txt").render().strip()
    try:
        page = _HTML_ENV.get_template(f"{template}.html")
    except TemplateNotFound:  # a text-only template still gets the layout, paragraph by paragraph
        page = _HTML_ENV.get_template("_paragraphs.html")
        context = {**context, "paragraphs": body.strip().split("\n\n")}
    html = page.render({**context, "subject": subject, "footer": footer})
    return subject, f"{body.strip()}\n\n--\n{footer}\n", html


def queue_email(session: Session, to: str, template: str, context: dict, *,
                idempotency_key: str) -> EmailMessage | None:
    """Write the message and its send job in the caller's transaction (once per key)."""
    if to.rpartition("@")[2].endswith(".invalid"):
        # RFC 2606 reserves .invalid: placeholder identities (agents without an email) are
        # never mailed, so nothing is queued that could only bounce.
        return None
    existing = session.scalars(select(EmailMessage)
                               .where(EmailMessage.idempotency_key == idempotency_key)).first()
    if existing is not None:
        return existing
    subject, text, html = render(template, context)
    message = EmailMessage(to=to, subject=subject, text=text, html=html, template=template,
                           idempotency_key=idempotency_key)
    try:
        with session.begin_nested():
            session.add(message)
            session.flush()
    except IntegrityError:
        return session.scalars(select(EmailMessage)
                               .where(EmailMessage.idempotency_key == idempotency_key)).one()
    queue.add_outbox(session, SEND_JOB, message.id)
    return message


def deliver(session: Session, email_id: str, transport: Transport) -> EmailMessage | None:
    """Send one queued message; a message already sent is left alone (jobs may run twice)."""
    message = session.get(EmailMessage, email_id)
    if message is None or message.status in ("sent", "outbox"):
        return message
    message.attempts += 1
    if not transport.api_key:
        message.status, message.sent_at = "outbox", utcnow()
        return message
    resend.api_key = transport.api_key
    resend.api_url = transport.api_url or "https://api.resend.com"
    params = {"from": transport.sender, "to": [message.to], "subject": message.subject,
              "text": message.text, "html": message.html}
    try:
        # The idempotency key makes Resend drop a resend of a message it already accepted.
        result = resend.Emails.send(params, {"idempotency_key": message.idempotency_key})
    except Exception as exc:
        message.last_error = f"{type(exc).__name__}: {exc}"[:500]
        if isinstance(exc, resend.exceptions.ResendError) \
                and str(getattr(exc, "code", "")) in ("400", "401", "403", "404", "422"):
            message.status = "failed"
            raise PermanentEmailError(str(exc)) from exc
        raise TransientEmailError(str(exc)) from exc
    message.status, message.sent_at = "sent", utcnow()
    message.provider_id = (result or {}).get("id")
    message.last_error = None
    return message


def recent_messages(session: Session, limit: int = 50, to: str | None = None):
    stmt = select(EmailMessage).order_by(EmailMessage.created_at.desc(), EmailMessage.id.desc())
    if to:
        stmt = stmt.where(EmailMessage.to == to)
    return list(session.scalars(stmt.limit(limit)))


def record_provider_event(session: Session, event: dict) -> EmailMessage | None:
    """Apply a verified Resend delivery event (`email.delivered`, `email.bounced`, …) to the
    message it is about; older events never overwrite newer ones."""
    data = event.get("data") or {}
    kind = str(event.get("type", ""))
    if not kind.startswith("email.") or not data.get("email_id"):
        return None
    message = session.scalars(select(EmailMessage)
                              .where(EmailMessage.provider_id == str(data["email_id"]))).first()
    if message is None:
        return None
    when = _event_time(event.get("created_at")) or utcnow()
    if message.delivery_event_at is None or when >= message.delivery_event_at:
        message.delivery_status = kind.removeprefix("email.")[:32]
        message.delivery_event_at = when
    return message


def _event_time(value):
    from datetime import datetime

    try:
        parsed = datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
