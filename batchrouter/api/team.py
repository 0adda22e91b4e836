"""JSON API for teams: agent registration, the workspace's members, invitations, roles,
ownership and security events (SPEC §2, §6). The role rules live in `teams.py`."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from batchrouter import teams
from batchrouter.api.auth import Principal, current_principal, require
from batchrouter.api.idempotent import idempotent
from batchrouter.api.v1 import json_body
from batchrouter.db import iso
from batchrouter.errors import InvalidRequest, ValidationFailed
from batchrouter.extensions import account_settings, client, client_ip, db_session, limiter
from batchrouter.models import User, Workspace

bp = Blueprint("team_api", __name__, url_prefix="/v1")


def _actor(principal: Principal) -> teams.Actor:
    user = db_session().get(User, principal.user_id) if principal.user_id else None
    return teams.Actor(user_id=principal.user_id, role=principal.role,
                       email=user.email if user else None, ip=client_ip())


def _string(data: dict, name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValidationFailed(f"{name} must be a {'non-empty ' if required else ''}string.",
                               code=f"invalid_{name}")
    return value


def _optional_body() -> dict:
    """Agent registration may be called with no body at all."""
    if not request.get_data(cache=True).strip():
        return {}
    return json_body()


def _agent_limit() -> str:
    return current_app.config["BATCHROUTER_AGENT_REGISTER_LIMIT"]


@bp.post("/auth/agent-register")
@limiter.limit(_agent_limit, key_func=client_ip)
def agent_register():
    """Create a workspace, its owner and an owner API key in one call (no authentication)."""
    data = _optional_body()
    session = db_session()
    result = teams.register_agent(session, account_settings(), client(),
                                  agent_name=_string(data, "agent_name"),
                                  email=_string(data, "email"),
                                  password=_string(data, "password"))
    session.commit()
    user, key = result.user, result.key
    return jsonify({
        "object": "agent_registration",
        "org_id": result.workspace.id,
        "user_id": user.id,
        "key_id": key.id,
        "api_key": result.secret,
        "mode": key.mode,
        "scopes": key.scopes,
        "workspace": {"id": result.workspace.id, "name": result.workspace.name},
        "email": None if user.email.endswith(".invalid") else user.email,
        "email_verification": "sent" if result.verification_sent else "not_requested",
        "created_at": iso(key.created_at),
    }), 201


# --- the caller's workspace -----------------------------------------------------------------

def _workspace_json(workspace: Workspace) -> dict:
    return {"id": workspace.id, "object": "workspace", "name": workspace.name,
            "created_at": iso(workspace.created_at)}


@bp.patch("/workspace")
@require("admin")
def rename_workspace():
    """Rename the workspace (owners and admins)."""
    principal = current_principal()
    session = db_session()
    name = _string(json_body(), "name", required=True)
    workspace = teams.rename_workspace(session, principal.workspace_id, name,
                                       _actor(principal))
    session.commit()
    return jsonify(_workspace_json(workspace))


@bp.get("/workspace/members")
@require("read")
def list_members():
    """Everyone in the workspace with their role (every role may look)."""
    members = teams.members(db_session(), current_principal().workspace_id)
    return jsonify({"object": "list", "data": [teams.member_json(m) for m in members]})


@bp.patch("/workspace/members/<user_id>")
@require("admin")
def change_member_role(user_id: str):
    """Give a member another role; only owners touch the owner role."""
    principal = current_principal()
    session = db_session()
    role = _string(json_body(), "role", required=True)
    member = teams.change_role(session, principal.workspace_id, user_id, role,
                               _actor(principal))
    session.commit()
    return jsonify(teams.member_json(member))


@bp.delete("/workspace/members/<user_id>")
@require("admin")
def remove_member(user_id: str):
    """Remove a member (their keys in this workspace are revoked)."""
    principal = current_principal()
    session = db_session()
    teams.remove_member(session, principal.workspace_id, user_id, _actor(principal))
    session.commit()
    return jsonify({"object": "member", "user_id": user_id, "deleted": True})


@bp.post("/workspace/transfer-ownership")
@require("admin")
def transfer_ownership():
    """Make another member the owner; the caller (an owner) becomes an admin."""
    principal = current_principal()
    session = db_session()
    user_id = _string(json_body(), "user_id", required=True)
    member = teams.transfer_ownership(session, principal.workspace_id, user_id,
                                      _actor(principal))
    session.commit()
    return jsonify(teams.member_json(member))


@bp.get("/workspace/invitations")
@require("admin")
def list_invitations():
    """Pending invitations (links are only ever in the emails)."""
    pending = teams.pending_invitations(db_session(), current_principal().workspace_id)
    return jsonify({"object": "list", "data": [teams.invitation_json(i) for i in pending]})


@bp.post("/workspace/invitations")
@require("admin")
@idempotent
def create_invitation():
    """Email an expiring, single-use invitation link to `email` for `role`."""
    principal = current_principal()
    data = json_body()
    session = db_session()
    invitation = teams.invite(session, principal.workspace_id,
                              _string(data, "email", required=True),
                              _string(data, "role") or "member", _actor(principal),
                              base_url=current_app.config["BASE_URL"].rstrip("/"),
                              ttl=current_app.config["BATCHROUTER_INVITE_TTL"])
    session.commit()
    return jsonify(teams.invitation_json(invitation)), 201


@bp.delete("/workspace/invitations/<invitation_id>")
@require("admin")
def revoke_invitation(invitation_id: str):
    """Withdraw an invitation; its link stops working."""
    principal = current_principal()
    session = db_session()
    invitation = teams.revoke_invitation(session, principal.workspace_id, invitation_id,
                                         _actor(principal))
    session.commit()
    return jsonify(teams.invitation_json(invitation))


@bp.get("/workspace/security-events")
@require("admin")
def security_events():
    """The workspace's security log, newest first; page with ?before=<id>."""
    principal = current_principal()
    session = db_session()
    raw_limit = request.args.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 200:
        raise InvalidRequest("limit must be a whole number from 1 to 200.",
                             code="invalid_limit")
    events, has_more = teams.workspace_events(session, principal.workspace_id,
                                              limit=int(raw_limit),
                                              before=request.args.get("before"))
    emails = teams.actor_emails(session, events)
    return jsonify({"object": "list", "data": [teams.event_json(e, emails) for e in events],
                    "has_more": has_more})

