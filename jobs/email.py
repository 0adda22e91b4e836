"""Send one email (Resend or the local outbox); retried by RQ with backoff on failure."""
from __future__ import annotations

import logging

from batchrouter import email as mail
from jobs import runtime

log = logging.getLogger(__name__)


def send_email(email_id: str) -> str | None:
    cfg = runtime.config()
    transport = mail.Transport(api_key=cfg.get("RESEND_API_KEY"),
                               api_url=cfg.get("RESEND_API_URL"), sender=cfg["EMAIL_FROM"])
    failure = None
    with runtime.runtime().db.session() as session:
        try:
            message = mail.deliver(session, email_id, transport)
        except mail.PermanentEmailError:
            log.error("email %s refused by the provider; not retried", email_id)
            return "failed"
        except mail.TransientEmailError as exc:
            failure = exc  # commit the attempt count and error first, then let RQ retry
            message = None
    if failure is not None:
        raise failure
    if message is not None and message.status == "outbox":
        # make run shows these in its terminal so a newcomer can verify with no provider.
        log.info("EMAIL (local outbox) to %s: %s\n%s", message.to, message.subject, message.text)
    return message.status if message else None
