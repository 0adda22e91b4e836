"""Sign-up, sign-in, email verification, password reset and console sessions (SPEC §2, §9)."""
from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from batchrouter import email as mail
from batchrouter import ledger, passwords, tokens
from batchrouter.db import utcnow
from batchrouter.errors import ValidationFailed
from batchrouter.models import Membership, User, UserSession, Workspace
from batchrouter.records import log_security

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
VERIFY_PURPOSE, RESET_PURPOSE = "verify-email", "reset-password"


@dataclass(frozen=True)
class Settings:
    """What account flows need from configuration, passed in so this module stays Flask-free."""

    secret: str
    base_url: str
    starter_credits: int = 0
    verify_ttl: int = 24 * 3600
    reset_ttl: int = 30 * 60


@dataclass(frozen=True)
class Client:
    """Who is asking: recorded on sessions and security events."""

    ip: str | None = None
    user_agent: str | None = None


def normalize_email(value: str) -> str:
    """Trim, NFC-normalise and lower-case an address; reject what is not an address."""
    cleaned = unicodedata.normalize("NFC", (value or "").strip()).lower()
    if len(cleaned) > 320 or not EMAIL_RE.match(cleaned) or "\u200b" in cleaned:
        raise ValidationFailed("Enter a valid email address.", code="invalid_email")
    return cleaned


def find_user_by_email(session: Session, email: str) -> User | None:
    return session.scalars(select(User).where(User.email == email)).first()


def create_workspace(session: Session, owner: User, name: str, settings: Settings) -> Workspace:
    """A workspace with `owner` as its owner and the configured starter credits."""
    workspace = Workspace(name=name.strip()[:120] or "My workspace")
    session.add(workspace)
    session.flush()
    session.add(Membership(workspace_id=workspace.id, user_id=owner.id, role="owner"))
    if settings.starter_credits > 0:
        ledger.grant(session, workspace.id, settings.starter_credits, kind="starter",
                     reason="Starter credits", idempotency_key=f"starter:{workspace.id}")
    return workspace


def create_user(session: Session, email: str, password: str | None, settings: Settings, *,
                name: str | None = None, workspace_name: str | None = None,
                verified: bool = False, operator: bool = False,
                with_workspace: bool = True) -> User:
    """Create a user with their own workspace (the operator CLI and sign-up share this).

    An invitee signing up from an invitation joins the inviting workspace instead
    (`with_workspace=False`).
    """
    email = normalize_email(email)
    if password is not None:
        passwords.check_policy(password)
    user = User(email=email, name=(name or "").strip()[:120] or None,
                password_hash=passwords.hash_password(password) if password else None,
                email_verified_at=utcnow() if verified else None, is_operator=operator,
                password_changed_at=utcnow())
    session.add(user)
    session.flush()
    if with_workspace:
        create_workspace(session, user,
                         workspace_name or f"{email.split('@')[0]}'s workspace", settings)
    return user


def sign_up(session: Session, email: str, password: str, settings: Settings, client: Client,
            *, name: str | None = None, workspace_name: str | None = None) -> User | None:
    """Register an account and email a verification link.

    When the address is taken nothing is created and the owner is told by email instead, so the
    page a visitor sees is the same either way (no account enumeration).
    """
    email = normalize_email(email)
    passwords.check_policy(password)
    existing = find_user_by_email(session, email)
    if existing is not None:
        # Spend the hash a real sign-up spends, so timing does not tell that the email exists.
        passwords.hash_password(password)
        mail.queue_email(session, existing.email, "account_exists",
                         {"login_url": f"{settings.base_url}/login",
                          "reset_url": f"{settings.base_url}/forgot-password"},
                         idempotency_key=f"account-exists/{existing.id}/{utcnow():%Y%m%d%H}")
        return None
    user = create_user(session, email, password, settings, name=name,
                       workspace_name=workspace_name)
    log_security(session, "signup", user_id=user.id, email=email, ip=client.ip,
                 user_agent=client.user_agent)
    send_verification(session, user, settings)
    return user


def send_verification(session: Session, user: User, settings: Settings) -> None:
    """Email a link that verifies the user's current address."""
    token = tokens.sign(settings.secret, VERIFY_PURPOSE, {"uid": user.id, "email": user.email})
    mail.queue_email(session, user.email, "verify_email",
                     {"verify_url": f"{settings.base_url}/verify-email/{token}",
                      "hours": settings.verify_ttl // 3600},
                     idempotency_key=f"verify-email/{user.id}/{token[-16:]}")


def verify_email(session: Session, token: str, settings: Settings) -> User:
    """Mark the address in the token verified; a used or stale link raises TokenInvalid."""
    payload = tokens.unsign(settings.secret, VERIFY_PURPOSE, token, settings.verify_ttl)
    user = session.get(User, payload.get("uid"))
    if user is None or user.email != payload.get("email") or user.is_verified:
        raise tokens.TokenInvalid("This verification link has already been used or is no "
                                  "longer valid.")
    user.email_verified_at = utcnow()
    log_security(session, "email_verified", user_id=user.id, email=user.email)
    return user


def authenticate(session: Session, email: str, password: str, client: Client) -> User | None:
    """The user when the password matches, else None; both failures cost the same."""
    try:
        email = normalize_email(email)
    except ValidationFailed:
        email = (email or "").strip().lower()[:320]
    user = find_user_by_email(session, email)
    if not passwords.verify_password(user.password_hash if user else None, password or ""):
        log_security(session, "login_failed", user_id=user.id if user else None, email=email,
                     ip=client.ip, user_agent=client.user_agent)
        return None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    return user


def _reset_fingerprint(user: User) -> str:
    # Part of the current hash: once the password changes, every earlier link stops working.
    return (user.password_hash or "none")[-16:]


def request_password_reset(session: Session, email: str, settings: Settings,
                           client: Client) -> None:
    """Email a reset link when the account exists; say nothing different when it does not."""
    try:
        email = normalize_email(email)
    except ValidationFailed:
        return
    user = find_user_by_email(session, email)
    if user is None:
        return
    token = tokens.sign(settings.secret, RESET_PURPOSE,
                        {"uid": user.id, "fp": _reset_fingerprint(user)})
    mail.queue_email(session, user.email, "reset_password",
                     {"reset_url": f"{settings.base_url}/reset-password/{token}",
                      "minutes": settings.reset_ttl // 60},
                     idempotency_key=f"reset-password/{user.id}/{token[-16:]}")
    log_security(session, "password_reset_requested", user_id=user.id, ip=client.ip,
                 user_agent=client.user_agent)


def user_for_reset_token(session: Session, token: str, settings: Settings) -> User:
    """The user a reset link belongs to, if it is fresh and unused."""
    payload = tokens.unsign(settings.secret, RESET_PURPOSE, token, settings.reset_ttl)
    user = session.get(User, payload.get("uid"))
    if user is None or payload.get("fp") != _reset_fingerprint(user):
        raise tokens.TokenInvalid("This reset link has already been used or is no longer valid.")
    return user


def set_password(session: Session, user: User, password: str, *, kind: str, client: Client,
                 keep_session_id: str | None = None) -> None:
    """Store a new password and sign out every other session of the user."""
    passwords.check_policy(password)
    user.password_hash = passwords.hash_password(password)
    user.password_changed_at = utcnow()
    revoke_sessions(session, user.id, except_id=keep_session_id)
    log_security(session, kind, user_id=user.id, ip=client.ip, user_agent=client.user_agent)
    mail.queue_email(session, user.email, "password_changed", {},
                     idempotency_key=f"password-changed/{user.id}/{user.password_changed_at.isoformat()}")


def reset_password(session: Session, token: str, password: str, settings: Settings,
                   client: Client) -> User:
    """Use a reset link: it works once, and signs out all sessions (no auto sign-in)."""
    user = user_for_reset_token(session, token, settings)
    set_password(session, user, password, kind="password_reset", client=client)
    return user


# --- workspaces and roles -------------------------------------------------------------------

def memberships_of(session: Session, user_id: str) -> list[Membership]:
    stmt = (select(Membership).where(Membership.user_id == user_id)
            .order_by(Membership.created_at, Membership.id))
    return list(session.scalars(stmt))


def role_in(session: Session, user_id: str, workspace_id: str) -> str | None:
    return session.scalars(select(Membership.role).where(
        Membership.user_id == user_id, Membership.workspace_id == workspace_id)).first()


# --- console sessions -----------------------------------------------------------------------

def start_session(session: Session, user: User, client: Client,
                  workspace_id: str | None = None) -> UserSession:
    """Record a new sign-in; its id (fresh each time) is all the cookie carries."""
    if workspace_id is None:
        first = memberships_of(session, user.id)
        workspace_id = first[0].workspace_id if first else None
    record = UserSession(user_id=user.id, workspace_id=workspace_id, ip=client.ip,
                         user_agent=(client.user_agent or "")[:300] or None)
    session.add(record)
    log_security(session, "login_succeeded", user_id=user.id, workspace_id=workspace_id,
                 ip=client.ip, user_agent=client.user_agent)
    return record


class ConsoleSession(NamedTuple):
    """A live console sign-in as every request needs it: plain values from one query. Building
    ORM objects for the session record and its user cost more than the query itself; the
    few views that change them load those (web/session.py)."""

    id: str
    user_id: str
    workspace_id: str | None
    last_seen_at: datetime
    email: str
    is_verified: bool
    is_operator: bool
    role: str | None  # in workspace_id; None when not (or no longer) a member there


def console_session(session: Session, session_id: str, *, idle_ttl: int,
                    absolute_ttl: int) -> ConsoleSession | None:
    """The live session, its user and their role in its workspace, in one query (every
    console request runs this); None once revoked or past its idle or absolute limit."""
    if not session_id:
        return None
    row = session.execute(_console_session_stmt(), {"session_id": session_id}).first()
    if row is None or _expired(row, idle_ttl, absolute_ttl):
        return None
    return ConsoleSession(row.id, row.user_id, row.workspace_id, row.last_seen_at, row.email,
                          row.email_verified_at is not None, bool(row.is_operator), row.role)


@functools.cache
def _console_session_stmt():
    """Built once: composing the statement cost more than running it on every request."""
    return (select(UserSession.id, UserSession.user_id, UserSession.workspace_id,
                   UserSession.created_at, UserSession.last_seen_at, UserSession.revoked_at,
                   User.email, User.email_verified_at, User.is_operator, Membership.role)
            .join(User, User.id == UserSession.user_id)
            .outerjoin(Membership, (Membership.user_id == UserSession.user_id)
                       & (Membership.workspace_id == UserSession.workspace_id))
            .where(UserSession.id == bindparam("session_id")))


def _expired(row, idle_ttl: int, absolute_ttl: int) -> bool:
    if row.revoked_at is not None:
        return True
    now = utcnow()
    return (now - row.created_at > timedelta(seconds=absolute_ttl)
            or now - row.last_seen_at > timedelta(seconds=idle_ttl))


def seen_long_ago(found: ConsoleSession) -> bool:
    """Whether to note that the session is in use: throttled to once a minute so that
    reading pages does not write on every request."""
    return utcnow() - found.last_seen_at > timedelta(seconds=60)


def note_seen(session: Session, session_id: str) -> None:
    session.execute(update(UserSession).where(UserSession.id == session_id)
                    .values(last_seen_at=utcnow()))


def move_session(session: Session, session_id: str, workspace_id: str | None) -> None:
    """Point a console session at another workspace (or none)."""
    session.execute(update(UserSession).where(UserSession.id == session_id)
                    .values(workspace_id=workspace_id))


def end_session(session: Session, session_id: str, client: Client) -> None:
    record = session.get(UserSession, session_id)
    if record is not None and record.revoked_at is None:
        record.revoked_at = utcnow()
        log_security(session, "logout", user_id=record.user_id, ip=client.ip,
                     user_agent=client.user_agent)


def revoke_sessions(session: Session, user_id: str, except_id: str | None = None) -> int:
    """Sign out every session of a user except one; returns how many ended."""
    stmt = (update(UserSession).where(UserSession.user_id == user_id,
                                      UserSession.revoked_at.is_(None))
            .values(revoked_at=utcnow()))
    if except_id:
        stmt = stmt.where(UserSession.id != except_id)
    return session.execute(stmt).rowcount or 0


def sessions_of(session: Session, user_id: str) -> list[UserSession]:
    stmt = (select(UserSession).where(UserSession.user_id == user_id,
                                      UserSession.revoked_at.is_(None))
            .order_by(UserSession.last_seen_at.desc()))
    return list(session.scalars(stmt))
