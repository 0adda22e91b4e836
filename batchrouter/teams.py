"""Workspaces and teams (SPEC §2 roles): invitations, role changes, removal, leaving,
ownership transfer, renaming, switching, a workspace's security activity, agent registration.

Every change to who belongs to a workspace takes the per-workspace lock first
(`ledger.lock_workspace`), so two owners demoting each other at once cannot leave a workspace
without an owner. Functions take an `Actor` (who acts, with their role in that workspace) and
enforce the role rules themselves: the console and the API call the same checks.
"""
from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from batchrouter import accounts, apikeys, ledger
from batchrouter import email as mail
from batchrouter.apikeys import ROLE_RANK
from batchrouter.db import iso, utcnow
from batchrouter.errors import Conflict, Forbidden, NotFound, ValidationFailed
from batchrouter.models import (
    ApiKey,
    Invitation,
    Membership,
    SecurityEvent,
    User,
    UserSession,
    Workspace,
)
from batchrouter.models.accounts import ROLES
from batchrouter.records import log_security
from batchrouter.tokens import TokenExpired, TokenInvalid

MAX_PENDING_INVITATIONS = 50
LAST_OWNER = ("A workspace needs at least one owner. Make another member an owner (or transfer "
              "ownership) first.")


@dataclass(frozen=True)
class Actor:
    """Who acts on a workspace: their user id and email, their role there, their IP."""

    user_id: str | None
    role: str | None
    email: str | None = None
    ip: str | None = None


# --- roles ----------------------------------------------------------------------------------

def has_role(role: str | None, minimum: str) -> bool:
    return ROLE_RANK.get(role or "", -1) >= ROLE_RANK[minimum]


def require_role(actor: Actor, minimum: str) -> None:
    """Forbidden unless the actor's role is at least `minimum`."""
    if not has_role(actor.role, minimum):
        who = "an owner" if minimum == "owner" else f"the {minimum} role or higher"
        raise Forbidden(f"This needs {who} in this workspace.", code="insufficient_role")


def _check_role_name(role: str) -> None:
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}.", code="invalid_role")


def _check_manage(actor: Actor, target_role: str, new_role: str | None = None) -> None:
    """Admins manage admins, members and viewers; only owners touch the owner role."""
    require_role(actor, "admin")
    if "owner" in (target_role, new_role) and actor.role != "owner":
        raise Forbidden("Only an owner can grant, change or remove the owner role.",
                        code="owner_required")


def _log(session: Session, kind: str, actor: Actor, workspace_id: str | None, **details):
    log_security(session, kind, user_id=actor.user_id, workspace_id=workspace_id,
                 email=actor.email, ip=actor.ip, **details)


# --- memberships ----------------------------------------------------------------------------

def members(session: Session, workspace_id: str) -> list[Membership]:
    """Members with their users, owners first, then by email."""
    rank = {role: i for i, role in enumerate(ROLES)}
    rows = session.scalars(select(Membership).join(User)
                           .where(Membership.workspace_id == workspace_id)
                           .order_by(User.email))
    return sorted(rows, key=lambda m: rank.get(m.role, len(ROLES)))


def membership(session: Session, workspace_id: str, user_id: str) -> Membership:
    found = session.scalars(select(Membership).where(
        Membership.workspace_id == workspace_id, Membership.user_id == user_id)).first()
    if found is None:
        raise NotFound("No such member of this workspace.", code="member_not_found")
    return found


def count_members(session: Session, workspace_id: str, role: str | None = None) -> int:
    stmt = select(func.count()).select_from(Membership).where(
        Membership.workspace_id == workspace_id)
    if role:
        stmt = stmt.where(Membership.role == role)
    return session.scalar(stmt) or 0


def is_last_owner(session: Session, workspace_id: str, user_id: str) -> bool:
    return (accounts.role_in(session, user_id, workspace_id) == "owner"
            and count_members(session, workspace_id, "owner") == 1)


def change_role(session: Session, workspace_id: str, user_id: str, role: str,
                actor: Actor) -> Membership:
    """Give a member another role; the last owner cannot be demoted."""
    _check_role_name(role)
    ledger.lock_workspace(session, workspace_id)
    target = membership(session, workspace_id, user_id)
    _check_manage(actor, target.role, role)
    if target.role == role:
        return target
    if target.role == "owner" and count_members(session, workspace_id, "owner") == 1:
        raise Conflict(LAST_OWNER, code="last_owner")
    old, target.role = target.role, role
    _log(session, "member_role_changed", actor, workspace_id, target_user_id=user_id,
         target_email=target.user.email, old_role=old, new_role=role)
    return target


def remove_member(session: Session, workspace_id: str, user_id: str, actor: Actor) -> None:
    """Remove someone else from the workspace (removing yourself is leaving)."""
    if user_id == actor.user_id:
        return leave(session, workspace_id, actor)
    ledger.lock_workspace(session, workspace_id)
    target = membership(session, workspace_id, user_id)
    _check_manage(actor, target.role)
    email, role = target.user.email, target.role
    drop_membership(session, target, actor, reason="member_removed")
    _log(session, "member_removed", actor, workspace_id, target_user_id=user_id,
         target_email=email, role=role)


def leave(session: Session, workspace_id: str, actor: Actor) -> None:
    """Leave a workspace; the last owner has to hand over first."""
    ledger.lock_workspace(session, workspace_id)
    mine = membership(session, workspace_id, actor.user_id)
    if mine.role == "owner" and count_members(session, workspace_id, "owner") == 1:
        raise Conflict("You are the last owner of this workspace. Make another member an owner "
                       "(or transfer ownership) before leaving.", code="last_owner")
    role = mine.role
    drop_membership(session, mine, actor, reason="member_left")
    _log(session, "member_left", actor, workspace_id, role=role)


def drop_membership(session: Session, target: Membership, actor: Actor, *, reason: str):
    """Delete a membership, revoke the keys its user made there, move their sessions away."""
    workspace_id, user_id = target.workspace_id, target.user_id
    # Such keys already stop working (apikeys.effective_role); revoking them keeps the keys
    # page truthful and stops them coming back if the person is invited again.
    keys = session.scalars(select(ApiKey).where(
        ApiKey.workspace_id == workspace_id, ApiKey.created_by_id == user_id,
        ApiKey.revoked_at.is_(None)))
    for key in keys:
        key.revoked_at = utcnow()
        _log(session, "api_key_revoked", actor, workspace_id, key_id=key.id, name=key.name,
             reason=reason)
    session.delete(target)
    session.flush()
    _repoint_sessions(session, user_id, workspace_id)


def _repoint_sessions(session: Session, user_id: str, away_from: str) -> None:
    """Console sessions looking at a workspace the user left move to another of theirs."""
    remaining = accounts.memberships_of(session, user_id)
    session.execute(update(UserSession)
                    .where(UserSession.user_id == user_id,
                           UserSession.workspace_id == away_from)
                    .values(workspace_id=remaining[0].workspace_id if remaining else None))


def transfer_ownership(session: Session, workspace_id: str, user_id: str,
                       actor: Actor) -> Membership:
    """Make another member the owner; the current owner stays on as an admin."""
    require_role(actor, "owner")
    if user_id == actor.user_id:
        raise ValidationFailed("Choose another member to transfer ownership to.",
                               code="invalid_target")
    ledger.lock_workspace(session, workspace_id)
    mine = membership(session, workspace_id, actor.user_id)
    if mine.role != "owner":  # re-read under the lock
        raise Forbidden("Only an owner can transfer ownership.", code="owner_required")
    target = membership(session, workspace_id, user_id)
    previous, target.role, mine.role = target.role, "owner", "admin"
    _log(session, "ownership_transferred", actor, workspace_id, target_user_id=user_id,
         target_email=target.user.email, previous_role=previous)
    return target


# --- workspaces -----------------------------------------------------------------------------

def clean_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name or len(name) > 120:
        raise ValidationFailed("Give the workspace a name of 1–120 characters.",
                               code="invalid_name")
    return name


def rename_workspace(session: Session, workspace_id: str, name: str, actor: Actor) -> Workspace:
    """Owners and admins rename the workspace."""
    require_role(actor, "admin")
    name = clean_name(name)
    workspace = session.get(Workspace, workspace_id)
    if workspace is None:
        raise NotFound("No such workspace.")
    if workspace.name != name:
        old, workspace.name = workspace.name, name
        _log(session, "workspace_renamed", actor, workspace_id, old_name=old, new_name=name)
    return workspace


def create_workspace(session: Session, user: User, name: str, settings: accounts.Settings,
                     actor: Actor) -> Workspace:
    """Another workspace owned by `user`.

    Starter credits go to a user's first workspace only, so that creating workspaces is not a
    way to mint credits.
    """
    name = clean_name(name)
    if accounts.memberships_of(session, user.id):
        settings = accounts.Settings(secret=settings.secret, base_url=settings.base_url,
                                     starter_credits=0)
    workspace = accounts.create_workspace(session, user, name, settings)
    _log(session, "workspace_created", actor, workspace.id, name=name)
    return workspace


def workspace_choices(session: Session, user_id: str) -> list[tuple[str, str, str]]:
    """(workspace id, name, role) of every workspace the user belongs to, by name (the nav's
    switcher: every console page asks)."""
    return [tuple(r) for r in session.execute(_workspace_choices_stmt(), {"user_id": user_id})]


@functools.cache
def _workspace_choices_stmt():
    # Built once: composing it cost more than running it, on every page.
    return (select(Workspace.id, Workspace.name, Membership.role)
            .join(Membership, Membership.workspace_id == Workspace.id)
            .where(Membership.user_id == bindparam("user_id"))
            .order_by(Workspace.name, Workspace.id))


def switch_workspace(session: Session, record: UserSession, workspace_id: str) -> None:
    """Point a console session at another workspace the user belongs to."""
    if accounts.role_in(session, record.user_id, workspace_id) is None:
        raise NotFound("You are not a member of that workspace.", code="not_a_member")
    record.workspace_id = workspace_id


# --- invitations ----------------------------------------------------------------------------

def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invite(session: Session, workspace_id: str, email: str, role: str, actor: Actor, *,
           base_url: str, ttl: int) -> Invitation:
    """Email an expiring, single-use link that adds `email` to the workspace with `role`."""
    require_role(actor, "admin")
    email = accounts.normalize_email(email)
    if email.endswith(".invalid"):
        raise ValidationFailed("That address cannot receive email.", code="invalid_email")
    _check_role_name(role)
    if role == "owner" and actor.role != "owner":
        raise Forbidden("Only an owner can invite another owner.", code="owner_required")
    member = session.scalars(select(Membership).join(User).where(
        Membership.workspace_id == workspace_id, User.email == email)).first()
    if member is not None:
        raise Conflict(f"{email} is already a member of this workspace.",
                       code="already_member")
    now = utcnow()
    pending = pending_invitations(session, workspace_id)
    # Inviting the same address again replaces the earlier link (a "resend").
    for old in (i for i in pending if i.email == email):
        old.revoked_at = now
    if sum(1 for i in pending if i.email != email) >= MAX_PENDING_INVITATIONS:
        raise Conflict(f"This workspace already has {MAX_PENDING_INVITATIONS} pending "
                       "invitations; withdraw some first.", code="too_many_invitations")
    token = secrets.token_urlsafe(32)
    invitation = Invitation(workspace_id=workspace_id, email=email, role=role,
                            token_hash=_token_hash(token), invited_by_id=actor.user_id,
                            created_at=now, expires_at=now + timedelta(seconds=ttl))
    session.add(invitation)
    session.flush()
    workspace = session.get(Workspace, workspace_id)
    mail.queue_email(session, email, "invitation", {
        "inviter": actor.email or "A teammate", "workspace": workspace.name, "role": role,
        "role_article": "an" if role[0] in "aeiou" else "a",
        "invite_url": f"{base_url}/invitations/{token}", "expires_in": _duration(ttl)},
        idempotency_key=f"invitation/{invitation.id}")
    _log(session, "member_invited", actor, workspace_id, invitation_id=invitation.id,
         invited_email=email, role=role)
    return invitation


def _duration(seconds: int) -> str:
    """'7 days', '1 hour', '5 minutes': how long a link lasts, for an email."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def pending_invitations(session: Session, workspace_id: str) -> list[Invitation]:
    stmt = (select(Invitation).where(Invitation.workspace_id == workspace_id,
                                     Invitation.accepted_at.is_(None),
                                     Invitation.revoked_at.is_(None),
                                     Invitation.expires_at > utcnow())
            .order_by(Invitation.created_at.desc(), Invitation.id.desc()))
    return list(session.scalars(stmt))


def revoke_invitation(session: Session, workspace_id: str, invitation_id: str,
                      actor: Actor) -> Invitation:
    """Withdraw a pending invitation; its link stops working."""
    require_role(actor, "admin")
    invitation = session.get(Invitation, invitation_id)
    if invitation is None or invitation.workspace_id != workspace_id:
        raise NotFound("No such invitation.", code="invitation_not_found")
    if invitation.role == "owner" and actor.role != "owner":
        raise Forbidden("Only an owner can withdraw an owner invitation.",
                        code="owner_required")
    if invitation.status(utcnow()) == "pending":
        invitation.revoked_at = utcnow()
        _log(session, "invitation_revoked", actor, workspace_id, invitation_id=invitation.id,
             invited_email=invitation.email, role=invitation.role)
    return invitation


def find_invitation(session: Session, token: str) -> Invitation:
    """The pending invitation of a link, or an error that says why it no longer works."""
    invitation = session.scalars(select(Invitation).where(
        Invitation.token_hash == _token_hash(token or ""))).first()
    if invitation is None:
        raise TokenInvalid("This invitation link is not valid.")
    status = invitation.status(utcnow())
    if status == "accepted":
        raise TokenInvalid("This invitation has already been used.", code="invitation_used")
    if status == "revoked":
        raise TokenInvalid("This invitation was withdrawn. Ask the workspace's admins for a "
                           "new one.", code="invitation_revoked")
    if status == "expired":
        raise TokenExpired("This invitation has expired. Ask the workspace's admins for a new "
                           "one.", code="invitation_expired")
    return invitation


def accept_invitation(session: Session, token: str, user: User, *,
                      record: UserSession | None = None,
                      client: accounts.Client | None = None) -> Membership:
    """Join the invitation's workspace with its role; `record` (a console session) switches
    to it. The claim is a conditional UPDATE, so a link works once even under a race."""
    invitation = find_invitation(session, token)
    ledger.lock_workspace(session, invitation.workspace_id)
    if accounts.role_in(session, user.id, invitation.workspace_id) is not None:
        raise Conflict("You are already a member of this workspace.", code="already_member")
    claimed = session.execute(
        update(Invitation).where(Invitation.id == invitation.id,
                                 Invitation.accepted_at.is_(None),
                                 Invitation.revoked_at.is_(None))
        .values(accepted_at=utcnow(), accepted_by_id=user.id)).rowcount
    if claimed != 1:
        raise TokenInvalid("This invitation has already been used.", code="invitation_used")
    joined = Membership(workspace_id=invitation.workspace_id, user_id=user.id,
                        role=invitation.role)
    session.add(joined)
    session.flush()
    if record is not None:
        record.workspace_id = invitation.workspace_id
    client = client or accounts.Client()
    log_security(session, "invitation_accepted", user_id=user.id,
                 workspace_id=invitation.workspace_id, email=user.email, ip=client.ip,
                 user_agent=client.user_agent, invitation_id=invitation.id,
                 invited_email=invitation.email, role=invitation.role)
    return joined


def sign_up_invitee(session: Session, token: str, password: str, settings: accounts.Settings,
                    client: accounts.Client, *, name: str | None = None) -> User:
    """Create an account for the invited address and accept the invitation with it.

    The link reached that inbox, so the address counts as verified. The account joins the
    inviting workspace instead of getting one of its own (it can create one later).
    """
    invitation = find_invitation(session, token)
    if accounts.find_user_by_email(session, invitation.email) is not None:
        raise Conflict(f"An account for {invitation.email} already exists: sign in to accept.",
                       code="account_exists")
    user = accounts.create_user(session, invitation.email, password, settings, name=name,
                                verified=True, with_workspace=False)
    log_security(session, "signup", user_id=user.id, email=user.email, ip=client.ip,
                 user_agent=client.user_agent, invitation_id=invitation.id)
    accept_invitation(session, token, user, client=client)
    return user


def invitation_json(invitation: Invitation) -> dict:
    return {"id": invitation.id, "object": "invitation", "email": invitation.email,
            "role": invitation.role, "status": invitation.status(utcnow()),
            "created_at": iso(invitation.created_at), "expires_at": iso(invitation.expires_at)}


def member_json(member: Membership) -> dict:
    return {"object": "member", "user_id": member.user_id, "email": member.user.email,
            "name": member.user.name, "role": member.role,
            "joined_at": iso(member.created_at)}


# --- activity -------------------------------------------------------------------------------

def workspace_events(session: Session, workspace_id: str, *, limit: int = 50,
                     before: str | None = None) -> tuple[list[SecurityEvent], bool]:
    """The workspace's security events, newest first, and whether older ones exist."""
    stmt = (select(SecurityEvent).where(SecurityEvent.workspace_id == workspace_id)
            .order_by(SecurityEvent.created_at.desc(), SecurityEvent.id.desc()))
    anchor = session.get(SecurityEvent, before) if before else None
    if anchor is not None and anchor.workspace_id == workspace_id:
        stmt = stmt.where(or_(SecurityEvent.created_at < anchor.created_at,
                              and_(SecurityEvent.created_at == anchor.created_at,
                                   SecurityEvent.id < anchor.id)))
    rows = list(session.scalars(stmt.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def actor_emails(session: Session, events: list[SecurityEvent]) -> dict[str, str]:
    """Current emails of the users behind events that did not record one."""
    ids = {e.user_id for e in events if e.user_id and not e.email}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.email).where(User.id.in_(ids))).all())


def describe(event: SecurityEvent) -> str:
    """A short human summary of an event's details (never secrets: none are stored)."""
    d = event.details or {}
    target = d.get("target_email") or d.get("invited_email") or ""
    if event.kind == "member_role_changed":
        return f"{target}: {d.get('old_role')} → {d.get('new_role')}"
    if event.kind in ("member_invited", "invitation_accepted", "invitation_revoked"):
        return f"{target} as {d.get('role')}"
    if event.kind == "ownership_transferred":
        return f"to {target}"
    if event.kind == "workspace_renamed":
        return f"“{d.get('old_name')}” → “{d.get('new_name')}”"
    if event.kind == "member_removed":
        return target
    return d.get("name") or ""


def event_json(event: SecurityEvent, emails: dict[str, str]) -> dict:
    return {"id": event.id, "object": "security_event", "kind": event.kind,
            "actor_email": event.email or emails.get(event.user_id or ""),
            "summary": describe(event), "ip": event.ip, "created_at": iso(event.created_at)}


# --- operators ------------------------------------------------------------------------------

def list_operators(session: Session) -> list[User]:
    """Users with the site-wide operator flag."""
    return list(session.scalars(select(User).where(User.is_operator.is_(True))
                                .order_by(User.email)))


# --- agents ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class AgentRegistration:
    user: User
    workspace: Workspace
    key: ApiKey
    secret: str
    verification_sent: bool


def register_agent(session: Session, settings: accounts.Settings, client: accounts.Client, *,
                   agent_name: str | None = None, email: str | None = None,
                   password: str | None = None) -> AgentRegistration:
    """One call for an autonomous agent: a workspace, its owner and an owner key.

    Without an email the owner gets a placeholder identity under the reserved `.invalid`
    domain (never mailed, cannot sign in). The owner is unverified until the emailed link is
    opened, so the key is a test key (apikeys.create_key allows only test keys then).
    """
    name = " ".join((agent_name or "").split())[:120] or None
    if password and not email:
        raise ValidationFailed("A password needs an email address to sign in with.",
                               code="password_without_email")
    if email:
        email = accounts.normalize_email(email)
        if email.endswith(".invalid"):
            raise ValidationFailed("That address cannot receive email.", code="invalid_email")
        if accounts.find_user_by_email(session, email) is not None:
            raise Conflict("An account with this email exists. Sign in to the console and "
                           "create a key there, or register without an email.",
                           code="email_taken")
    placeholder = f"agent-{secrets.token_hex(8)}@agents.invalid"
    user = accounts.create_user(session, email or placeholder, password or None, settings,
                                name=name, workspace_name=name or "Agent workspace")
    if not email:
        user.email = f"agent-{user.id.removeprefix('usr_')}@agents.invalid"
    workspace = session.get(Workspace, accounts.memberships_of(session, user.id)[0].workspace_id)
    key, secret = apikeys.create_key(session, workspace_id=workspace.id, creator_id=user.id,
                                     creator_role="owner", name=f"{name or 'agent'} key"[:120],
                                     scopes=None, mode="test", verified=False, ip=client.ip)
    log_security(session, "agent_registered", user_id=user.id, workspace_id=workspace.id,
                 email=user.email, ip=client.ip, user_agent=client.user_agent,
                 name=name or "", key_id=key.id)
    if email:
        accounts.send_verification(session, user, settings)
    return AgentRegistration(user=user, workspace=workspace, key=key, secret=secret,
                             verification_sent=bool(email))
