"""JSON API under /v1: account and API keys (later issues add catalog, quotes, batches…)."""
from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, jsonify, request

from batchrouter import apikeys, ledger, money
from batchrouter.api.auth import current_principal, require
from batchrouter.api.idempotent import idempotent
from batchrouter.db import iso
from batchrouter.errors import InvalidRequest, ValidationFailed
from batchrouter.extensions import client_ip, db_session
from batchrouter.models import User, Workspace

bp = Blueprint("v1", __name__, url_prefix="/v1")


def json_body() -> dict:
    """The request's JSON object, or a 400 the client can act on."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidRequest("Send a JSON object with Content-Type: application/json.",
                             code="invalid_json")
    return data


def parse_expiry(value) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise ValidationFailed("expires_at must be an ISO 8601 time.",
                               code="invalid_expiry") from exc
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


@bp.get("/auth/account")
@require("read")
def account():
    """The caller's account, workspace, role and credit balances."""
    principal = current_principal()
    session = db_session()
    workspace = session.get(Workspace, principal.workspace_id)
    user = session.get(User, principal.user_id) if principal.user_id else None
    balances = ledger.balances(session, workspace.id)
    return jsonify({
        "object": "account",
        "user": user and {"id": user.id, "email": user.email, "name": user.name,
                          "email_verified": user.is_verified},
        "workspace": {"id": workspace.id, "name": workspace.name,
                      "created_at": iso(workspace.created_at)},
        "role": principal.role,
        "mode": principal.mode,
        "scopes": sorted(principal.scopes),
        "api_key": principal.key and {"id": principal.key.id, "name": principal.key.name},
        "credit_balance": money.to_wire(balances.available),
        "reserved": money.to_wire(balances.reserved),
        "spent": money.to_wire(balances.spent),
        "currency": "usd",
    })


@bp.get("/auth/account/api-keys")
@require("admin")
def list_api_keys():
    """Keys of the workspace (never their secrets)."""
    keys = apikeys.list_keys(db_session(), current_principal().workspace_id)
    return jsonify({"object": "list", "data": [apikeys.to_json(k) for k in keys]})


@bp.post("/auth/account/api-keys")
@require("admin")
@idempotent(redact=("secret",))
def create_api_key():
    """Create a key; the secret is in this response and nowhere else, ever."""
    principal = current_principal()
    data = json_body()
    scopes = data.get("scopes")
    if scopes is not None and not (isinstance(scopes, list)
                                   and all(isinstance(s, str) for s in scopes)):
        raise ValidationFailed("scopes must be a list of strings.", code="invalid_scopes")
    mode = data.get("mode", principal.mode)
    if principal.mode == "test" and mode != "test":
        raise ValidationFailed("A test key can only create test keys.", code="invalid_mode")
    session = db_session()
    user = session.get(User, principal.user_id) if principal.user_id else None
    key, secret = apikeys.create_key(
        session, workspace_id=principal.workspace_id, creator_id=principal.user_id,
        creator_role=principal.role, name=data.get("name", ""), scopes=scopes, mode=mode,
        expires_at=parse_expiry(data.get("expires_at")),
        verified=bool(user and user.is_verified), ip=client_ip())
    session.commit()
    body = apikeys.to_json(key) | {"secret": secret}
    return jsonify(body), 201


@bp.delete("/auth/account/api-keys/<key_id>")
@require("admin")
def revoke_api_key(key_id: str):
    """Revoke a key; it stops working on the next request."""
    principal = current_principal()
    session = db_session()
    key = apikeys.revoke_key(session, principal.workspace_id, key_id,
                             actor_id=principal.user_id, ip=client_ip())
    session.commit()
    return jsonify(apikeys.to_json(key))
