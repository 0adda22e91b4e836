"""Webhook endpoints of SPEC §6/§7: the workspace default endpoint, the delivery log, replay."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from batchrouter.api.auth import current_principal, require
from batchrouter.api.v1 import json_body
from batchrouter.errors import InvalidRequest, NotFound
from batchrouter.extensions import db_session
from batchrouter.models import WebhookEndpoint
from batchrouter.webhooks import endpoints, events, log

bp = Blueprint("webhooks_api", __name__, url_prefix="/v1")


def _allow_private() -> bool:
    return current_app.config["WEBHOOKS_ALLOW_PRIVATE_TARGETS"]


def _default():
    endpoint = endpoints.default_endpoint(db_session(), current_principal().workspace_id)
    if endpoint is None:
        raise NotFound("No default webhook endpoint is configured.",
                       code="webhook_not_configured")
    return endpoint


@bp.get("/auth/account/delivery-webhook")
@require("read")
def get_default():
    """The workspace default endpoint (the secret is never echoed)."""
    return jsonify(endpoints.to_json(_default()))


@bp.put("/auth/account/delivery-webhook")
@require("admin")
def put_default():
    """Create or replace the default endpoint: `{url, secret?}`; re-enables a disabled one.
    A generated or given secret is returned once."""
    data = json_body()
    url, secret = endpoints.check_registration(data.get("url"), data.get("secret"),
                                               allow_private=_allow_private())
    session = db_session()
    existed = endpoints.default_endpoint(session, current_principal().workspace_id) is not None
    endpoint, shown = endpoints.put_default(session, current_principal().workspace_id, url,
                                            secret, key=current_app.config["SECRET_KEY"])
    session.commit()
    return jsonify(endpoints.to_json(endpoint, shown)), 200 if existed else 201


@bp.post("/auth/account/delivery-webhook/rotate-secret")
@require("admin")
def rotate_secret():
    """New secret (given or generated); the old one also signs for `overlap_seconds`."""
    data = json_body() if request.get_data() else {}  # the body is optional
    secret = endpoints.clean_secret(data.get("secret"))
    overlap = data.get("overlap_seconds", endpoints.OVERLAP_DEFAULT)
    if not isinstance(overlap, int) or isinstance(overlap, bool):
        raise InvalidRequest("overlap_seconds must be an integer.", code="invalid_overlap")
    session = db_session()
    endpoint = _default()
    shown = endpoints.rotate_secret(session, endpoint, secret, overlap,
                                    key=current_app.config["SECRET_KEY"])
    session.commit()
    return jsonify(endpoints.to_json(endpoint, shown))


@bp.post("/auth/account/delivery-webhook/test")
@require("admin")
def send_test():
    """Queue a `webhook.test` event to the default endpoint."""
    session = db_session()
    delivery = events.test_event(session, _default())
    session.commit()
    return jsonify(log.delivery_json(delivery, [])), 202


@bp.delete("/auth/account/delivery-webhook")
@require("admin")
def delete_default():
    session = db_session()
    endpoint = endpoints.delete_default(session, current_principal().workspace_id)
    session.commit()
    return jsonify({"object": "webhook_endpoint", "id": endpoint.id, "deleted": True})


def _limit(default: int = 20, cap: int = 100) -> int:
    raw = request.args.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= cap:
        raise InvalidRequest(f"limit must be 1–{cap}.", code="invalid_limit")
    return int(raw)


@bp.get("/webhook-deliveries")
@require("read")
def list_deliveries():
    """Newest first, with every attempt; filters endpoint_id, status, event_type, batch_id;
    `after` is the previous page's last_id."""
    limit = _limit()
    args = request.args
    session = db_session()
    rows = log.list_deliveries(session, current_principal().workspace_id,
                               endpoint_id=args.get("endpoint_id"), status=args.get("status"),
                               event_type=args.get("event_type"),
                               batch_id=args.get("batch_id"), after=args.get("after"),
                               limit=limit + 1)
    return jsonify(log.page_json(session, rows, limit))


@bp.get("/webhook-deliveries/<delivery_id>")
@require("read")
def get_delivery(delivery_id: str):
    session = db_session()
    delivery = events.get_delivery(session, current_principal().workspace_id, delivery_id)
    attempts = log.attempts_of(session, [delivery.id])[delivery.id]
    return jsonify(log.delivery_json(delivery, attempts,
                                     session.get(WebhookEndpoint, delivery.endpoint_id)))


@bp.post("/webhook-deliveries/<delivery_id>/redeliver")
@require("admin")
def redeliver(delivery_id: str):
    """Send the delivery's event again (same webhook-id) as a new delivery."""
    session = db_session()
    again = events.redeliver(session, current_principal().workspace_id, delivery_id)
    session.commit()
    return jsonify(log.delivery_json(again, [])), 202
