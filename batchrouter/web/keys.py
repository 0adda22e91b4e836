"""API keys page: create (secret shown once), list, revoke (SPEC §2)."""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, flash, g, request, url_for
from flask_login import current_user

from batchrouter import apikeys
from batchrouter.db import utcnow
from batchrouter.errors import DomainError
from batchrouter.extensions import client_ip, db_session
from batchrouter.web.console import require_scope
from batchrouter.web.htmx import redirect_to, render

bp = Blueprint("keys", __name__, url_prefix="/api-keys")

EXPIRY_CHOICES = {"never": None, "30": 30, "90": 90, "365": 365}


def _context(**extra):
    keys = apikeys.list_keys(db_session(), current_user.workspace_id)
    return {"keys": keys, "scopes": apikeys.SCOPES,
            "allowed": apikeys.allowed_scopes(current_user.role or ""),
            "display": apikeys.display, **extra}


@bp.get("")
@require_scope("admin")
def index():
    """List the workspace's keys with the create form."""
    return render("keys/index.html", "keys/_keys.html", **_context())


@bp.post("")
@require_scope("admin")
def create():
    """Create a key and show its secret once (never stored, never shown again)."""
    g.no_store = True
    days = EXPIRY_CHOICES.get(request.form.get("expires", "never"))
    session = db_session()
    try:
        key, secret = apikeys.create_key(
            session, workspace_id=current_user.workspace_id, creator_id=current_user.id,
            creator_role=current_user.role, name=request.form.get("name", ""),
            scopes=request.form.getlist("scopes") or None,
            mode="test" if request.form.get("mode") == "test" else "live",
            expires_at=utcnow() + timedelta(days=days) if days else None,
            verified=current_user.is_verified, ip=client_ip())
    except DomainError as exc:
        session.rollback()
        response = render("keys/index.html", "keys/_keys.html", **_context(error=exc.message))
        response.status_code = 422
        return response
    session.commit()
    return render("keys/index.html", "keys/_keys.html",
                  **_context(new_key=key, new_secret=secret))


@bp.post("/<key_id>/revoke")
@require_scope("admin")
def revoke(key_id: str):
    """Revoke a key at once."""
    session = db_session()
    key = apikeys.revoke_key(session, current_user.workspace_id, key_id,
                             actor_id=current_user.id, ip=client_ip())
    session.commit()
    flash(f"Key “{key.name}” revoked.", "success")
    return redirect_to(url_for("keys.index"))
