"""Signature-verified inbound webhooks under /webhooks/ (CSRF-exempt): Resend delivery events."""
from __future__ import annotations

from flask import Blueprint, current_app, request
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from batchrouter import email as mail
from batchrouter.errors import InvalidRequest, NotFound
from batchrouter.extensions import db_session

bp = Blueprint("inbound", __name__)


@bp.post("/webhooks/resend")
def resend_events():
    """Resend signs with Svix (svix-id/-timestamp/-signature), i.e. Standard Webhooks."""
    secret = current_app.config["BATCHROUTER_RESEND_WEBHOOK_SECRET"]
    if not secret:
        raise NotFound("Resend webhooks are not configured.", code="not_configured")
    headers = {name: request.headers.get(f"svix-{name}") or request.headers.get(f"webhook-{name}")
               or "" for name in ("id", "timestamp", "signature")}
    try:
        event = Webhook(secret).verify(request.get_data(), {
            f"webhook-{k}": v for k, v in headers.items()})
    except (WebhookVerificationError, ValueError) as exc:
        raise InvalidRequest("The webhook signature is not valid.",
                             code="invalid_signature") from exc
    session = db_session()
    mail.record_provider_event(session, event if isinstance(event, dict) else {})
    session.commit()
    return "", 204
