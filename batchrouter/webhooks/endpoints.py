"""Webhook endpoints: the workspace default and per-batch ones; secrets and their rotation.

URL checks that resolve DNS (`check_registration`) run before any transaction is opened; the
functions that write take the already-checked values.

Signing secrets are needed in clear to sign, so they are sealed at rest (sealing.py, under
SECRET_KEY) rather than hashed: every function that stores or reads one takes `key`, the
app's SECRET_KEY. A stored value without the `sealed:` prefix is a secret written before
sealing existed (migration 0011): it is read as it is and sealed when next rotated.
"""
from __future__ import annotations

import base64
import binascii
import secrets as random
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from batchrouter import email as mail
from batchrouter import sealing
from batchrouter.db import iso, utcnow
from batchrouter.errors import Conflict, NotFound, ValidationFailed
from batchrouter.models import Batch, Membership, User, WebhookDelivery, WebhookEndpoint
from batchrouter.webhooks import targets

SECRET_MIN, SECRET_MAX = 8, 256
OVERLAP_DEFAULT = 24 * 3600
OVERLAP_MAX = 7 * 24 * 3600
LIVE = ("active", "disabled")
PURPOSE = "webhook-secrets"
SEALED = "sealed:"


def seal(key: str, secret: str) -> str:
    return SEALED + sealing.seal(key, PURPOSE, secret)


def unseal(key: str, stored: str | None) -> str | None:
    """The secret in clear; None when it was sealed under another SECRET_KEY."""
    if stored is None or not stored.startswith(SEALED):
        return stored
    return sealing.unseal(key, PURPOSE, stored[len(SEALED):])


def hint(secret: str) -> str:
    return secret[-4:]


def _set_secret(endpoint: WebhookEndpoint, key: str, secret: str) -> None:
    endpoint.secret, endpoint.secret_hint = seal(key, secret), hint(secret)


def generate_secret() -> str:
    """`whsec_` + base64 of 32 random bytes (the form Standard Webhooks libraries expect)."""
    return "whsec_" + base64.b64encode(random.token_bytes(32)).decode()


def clean_secret(secret) -> str | None:
    """A customer-supplied secret (8–256 printable characters), or None to generate one."""
    if secret in (None, ""):
        return None
    if not isinstance(secret, str) or not SECRET_MIN <= len(secret) <= SECRET_MAX \
            or not secret.isprintable() or secret != secret.strip():
        raise ValidationFailed(f"The webhook secret must be {SECRET_MIN}–{SECRET_MAX} printable "
                               "characters without surrounding spaces.",
                               code="invalid_webhook_secret")
    if secret.startswith("whsec_"):
        try:
            decoded = base64.b64decode(secret[6:] + "==", validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ValidationFailed("A whsec_ secret must be base64 after the prefix.",
                                   code="invalid_webhook_secret") from exc
        if len(decoded) < 8:
            raise ValidationFailed("A whsec_ secret must carry at least 8 bytes.",
                                   code="invalid_webhook_secret")
    return secret


def check_registration(url, secret, *, allow_private: bool, resolver=None) -> tuple[str, str | None]:
    """Validate a URL (resolving its host) and a secret; call outside a transaction."""
    target = targets.check_url(url, allow_private=allow_private, resolver=resolver)
    return target.url, clean_secret(secret)


def check_batch_webhook(value, *, key: str, allow_private: bool, resolver=None) -> dict | None:
    """The `webhook` of a batch create, checked: `{url, secret, secret_hint}` with the secret
    (generated if absent) already sealed."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"url", "secret"}:
        raise ValidationFailed("webhook must be an object with url and optional secret.",
                               code="invalid_webhook")
    url, secret = check_registration(value.get("url"), value.get("secret"),
                                     allow_private=allow_private, resolver=resolver)
    secret = secret or generate_secret()
    return {"url": url, "secret": seal(key, secret), "secret_hint": hint(secret)}


def attach_to_batch(session: Session, batch: Batch) -> WebhookEndpoint | None:
    """Turn the checked `webhook` of a new batch into its endpoint; the batch row then keeps
    only the URL and the endpoint id (never the secret)."""
    if not batch.webhook or "secret" not in batch.webhook:
        return None
    endpoint = WebhookEndpoint(workspace_id=batch.workspace_id, batch_id=batch.id,
                               url=batch.webhook["url"], secret=batch.webhook["secret"],
                               secret_hint=batch.webhook["secret_hint"])
    session.add(endpoint)
    session.flush()
    batch.webhook = {"url": endpoint.url, "endpoint_id": endpoint.id}
    return endpoint


def default_endpoint(session: Session, workspace_id: str) -> WebhookEndpoint | None:
    return session.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.workspace_id == workspace_id, WebhookEndpoint.batch_id.is_(None),
        WebhookEndpoint.status.in_(LIVE))).first()


def targets_for(session: Session, batch: Batch | None, workspace_id: str) -> list:
    """Active endpoints an event goes to: the batch's own endpoint, else the default."""
    endpoint_id = (batch.webhook or {}).get("endpoint_id") if batch is not None else None
    if endpoint_id:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
    else:
        endpoint = default_endpoint(session, workspace_id)
    return [endpoint] if endpoint is not None and endpoint.status == "active" else []


def put_default(session: Session, workspace_id: str, url: str, secret: str | None, *,
                key: str) -> tuple[WebhookEndpoint, str | None]:
    """Create or update the default endpoint (re-enabling it); returns the secret to show
    once when one was generated or given, else None."""
    endpoint = default_endpoint(session, workspace_id)
    now = utcnow()
    if endpoint is None:
        secret = secret or generate_secret()
        endpoint = WebhookEndpoint(workspace_id=workspace_id, url=url, created_at=now)
        _set_secret(endpoint, key, secret)
        session.add(endpoint)
        session.flush()
        return endpoint, secret
    endpoint.url, endpoint.updated_at = url, now
    if endpoint.status == "disabled":
        endpoint.status, endpoint.disabled_reason, endpoint.disabled_at = "active", None, None
        endpoint.failing_since = None
    if secret:
        _set_secret(endpoint, key, secret)
        endpoint.previous_secret, endpoint.previous_secret_until = None, None
    return endpoint, secret


def rotate_secret(session: Session, endpoint: WebhookEndpoint, secret: str | None = None,
                  overlap: int = OVERLAP_DEFAULT, *, key: str) -> str:
    """Replace the secret; the old one keeps signing too for `overlap` seconds."""
    if not 0 <= overlap <= OVERLAP_MAX:
        raise ValidationFailed(f"overlap_seconds must be 0–{OVERLAP_MAX}.",
                               code="invalid_overlap")
    now = utcnow()
    previous = unseal(key, endpoint.secret) if overlap else None
    endpoint.previous_secret = seal(key, previous) if previous else None
    endpoint.previous_secret_until = now + timedelta(seconds=overlap) if previous else None
    secret = secret or generate_secret()
    _set_secret(endpoint, key, secret)
    endpoint.updated_at = now
    return secret


def signing_secrets(endpoint: WebhookEndpoint, now, key: str) -> list[str]:
    """The secrets that sign a delivery now (two during a rotation's overlap); empty when
    the current one cannot be read (SECRET_KEY changed: the secret must be rotated)."""
    current = unseal(key, endpoint.secret)
    if current is None:
        return []
    if endpoint.previous_secret and endpoint.previous_secret_until \
            and endpoint.previous_secret_until > now:
        previous = unseal(key, endpoint.previous_secret)
        return [current, previous] if previous else [current]
    return [current]


def delete_default(session: Session, workspace_id: str) -> WebhookEndpoint:
    endpoint = default_endpoint(session, workspace_id)
    if endpoint is None:
        raise NotFound("No default webhook endpoint is configured.",
                       code="webhook_not_configured")
    endpoint.status, endpoint.updated_at = "deleted", utcnow()
    _stop_pending(session, endpoint, "endpoint deleted")
    return endpoint


def get_endpoint(session: Session, workspace_id: str, endpoint_id: str) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.workspace_id != workspace_id:
        raise NotFound("No such webhook endpoint.", code="webhook_endpoint_not_found")
    return endpoint


def list_endpoints(session: Session, workspace_id: str, limit: int = 50) -> list:
    """The default endpoint first, then per-batch endpoints, newest first."""
    rows = session.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.workspace_id == workspace_id, WebhookEndpoint.status.in_(LIVE))
        .order_by(WebhookEndpoint.id.desc()).limit(limit)).all()
    return sorted(rows, key=lambda e: e.batch_id is not None)


def require_active(endpoint: WebhookEndpoint) -> None:
    if endpoint.status != "active":
        raise Conflict("This endpoint is disabled; save it again to re-enable it first.",
                       code="webhook_endpoint_disabled")


def disable(session: Session, endpoint: WebhookEndpoint, reason: str, base_url: str) -> None:
    """Stop delivering to the endpoint and tell the owners (once per disable)."""
    if endpoint.status != "active":
        return
    now = utcnow()
    endpoint.status, endpoint.disabled_reason, endpoint.disabled_at = "disabled", reason, now
    _stop_pending(session, endpoint, f"endpoint disabled: {reason}")
    notify_owners(session, endpoint, "webhook_disabled", base_url,
                  key=f"webhook-disabled:{endpoint.id}:{iso(now)}", reason=reason)


def _stop_pending(session: Session, endpoint: WebhookEndpoint, why: str) -> None:
    session.flush()  # the delivery pump records with autoflush off: its rows first
    session.execute(update(WebhookDelivery).where(
        WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == "pending")
        .values(status="failed", last_error=why, finished_at=utcnow(), next_attempt_at=None))


def owner_emails(session: Session, workspace_id: str) -> list[str]:
    return list(session.scalars(select(User.email).join(Membership, Membership.user_id == User.id)
                                .where(Membership.workspace_id == workspace_id,
                                       Membership.role == "owner").order_by(User.email)))


def notify_owners(session: Session, endpoint: WebhookEndpoint, template: str, base_url: str,
                  *, key: str, **context) -> None:
    link = f"{base_url.rstrip('/')}/webhook-endpoints/{endpoint.id}"
    for address in owner_emails(session, endpoint.workspace_id):
        mail.queue_email(session, address, template,
                         {"url": endpoint.url, "console_url": link, **context},
                         idempotency_key=f"{key}:{address}")


def to_json(endpoint: WebhookEndpoint, secret: str | None = None) -> dict:
    body = {"object": "webhook_endpoint", "id": endpoint.id, "url": endpoint.url,
            "batch_id": endpoint.batch_id, "status": endpoint.status,
            "disabled_reason": endpoint.disabled_reason,
            "disabled_at": iso(endpoint.disabled_at),
            "failing_since": iso(endpoint.failing_since),
            "secret_hint": "…" + endpoint.secret_hint,
            "previous_secret_expires_at": iso(endpoint.previous_secret_until),
            "created_at": iso(endpoint.created_at)}
    if secret:
        body["secret"] = secret  # shown once, at creation or rotation
    return body
