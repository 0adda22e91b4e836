"""Self-service account management (SPEC §9 account page): change the email address with a
confirmation link, sign out one other session, delete the account."""
from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session

from batchrouter import accounts, ledger, passwords, teams, tokens
from batchrouter import email as mail
from batchrouter.db import utcnow
from batchrouter.errors import Conflict, NotFound, ValidationFailed
from batchrouter.models import User, UserSession
from batchrouter.records import log_security

EMAIL_CHANGE_PURPOSE = "change-email"


def check_password(user: User, password: str) -> None:
    """Sensitive changes ask for the password again, even inside a signed-in session."""
    if not passwords.verify_password(user.password_hash, password or ""):
        raise ValidationFailed("The password is not right.", code="wrong_password")


def request_email_change(session: Session, user: User, password: str, new_email: str,
                         settings: accounts.Settings, client: accounts.Client) -> str:
    """Email a confirmation link to the new address and a notice to the current one."""
    check_password(user, password)
    new_email = accounts.normalize_email(new_email)
    if new_email == user.email:
        raise ValidationFailed("That is already your email address.", code="same_email")
    if new_email.endswith(".invalid"):
        raise ValidationFailed("That address cannot receive email.", code="invalid_email")
    if accounts.find_user_by_email(session, new_email) is not None:
        raise Conflict("Another account uses that email address.", code="email_taken")
    # Bound to the current address: once the email changes, every earlier link is dead.
    token = tokens.sign(settings.secret, EMAIL_CHANGE_PURPOSE,
                        {"uid": user.id, "old": user.email, "new": new_email})
    mail.queue_email(session, new_email, "email_change_confirm",
                     {"confirm_url": f"{settings.base_url}/account/email/confirm/{token}",
                      "hours": settings.verify_ttl // 3600},
                     idempotency_key=f"email-change/{user.id}/{token[-16:]}")
    mail.queue_email(session, user.email, "email_change_notice",
                     {"new_email": new_email, "account_url": f"{settings.base_url}/account"},
                     idempotency_key=f"email-change-notice/{user.id}/{token[-16:]}")
    log_security(session, "email_change_requested", user_id=user.id, email=user.email,
                 ip=client.ip, user_agent=client.user_agent, new_email=new_email)
    return new_email


def confirm_email_change(session: Session, token: str, settings: accounts.Settings,
                         client: accounts.Client) -> User:
    """Open the link sent to the new address: the account now uses (and has verified) it."""
    payload = tokens.unsign(settings.secret, EMAIL_CHANGE_PURPOSE, token, settings.verify_ttl)
    user = session.get(User, payload.get("uid"))
    if user is None or user.email != payload.get("old"):
        raise tokens.TokenInvalid("This link has already been used or is no longer valid.")
    new_email = payload["new"]
    if accounts.find_user_by_email(session, new_email) is not None:
        raise tokens.TokenInvalid("Another account now uses that address; nothing changed.")
    old_email, user.email, user.email_verified_at = user.email, new_email, utcnow()
    log_security(session, "email_changed", user_id=user.id, email=new_email, ip=client.ip,
                 user_agent=client.user_agent, old_email=old_email, new_email=new_email)
    mail.queue_email(session, old_email, "email_changed", {"new_email": new_email},
                     idempotency_key=f"email-changed/{user.id}/{token[-16:]}")
    return user


def revoke_session(session: Session, user_id: str, session_id: str, *, current_id: str,
                   client: accounts.Client) -> UserSession:
    """Sign out one other console session of the user."""
    record = session.get(UserSession, session_id)
    if record is None or record.user_id != user_id or record.revoked_at is not None:
        raise NotFound("No such active session.", code="session_not_found")
    if record.id == current_id:
        raise ValidationFailed("That is this session: use Sign out instead.",
                               code="current_session")
    record.revoked_at = utcnow()
    log_security(session, "session_revoked", user_id=user_id, ip=client.ip,
                 user_agent=client.user_agent, session_id=record.id, count=1)
    return record


def blocking_workspaces(session: Session, user_id: str) -> list[str]:
    """Names of workspaces where the user is the last owner and others remain."""
    return [m.workspace.name for m in accounts.memberships_of(session, user_id)
            if teams.is_last_owner(session, m.workspace_id, user_id)
            and teams.count_members(session, m.workspace_id) > 1]


def delete_account(session: Session, user: User, password: str,
                   client: accounts.Client) -> None:
    """Delete the account after the password is re-entered.

    Refused while the user is the last owner of a workspace with other members. A workspace
    where they are the only member is closed with the account: its keys are revoked and it
    keeps no members, while its ledger and batch records stay (they must be kept, SPEC §10).
    """
    check_password(user, password)
    blocking = blocking_workspaces(session, user.id)
    if blocking:
        raise Conflict(f"You are the last owner of {', '.join(blocking)}, which has other "
                       "members. Transfer ownership or make another member an owner first.",
                       code="last_owner")
    actor = teams.Actor(user_id=user.id, role=None, email=user.email, ip=client.ip)
    memberships = accounts.memberships_of(session, user.id)
    for m in memberships:
        ledger.lock_workspace(session, m.workspace_id)
        closed = teams.count_members(session, m.workspace_id) == 1
        teams.drop_membership(session, m, actor, reason="account_deleted")
        log_security(session, "account_deleted", user_id=user.id, workspace_id=m.workspace_id,
                     email=user.email, ip=client.ip, workspace_closed=closed)
    if not memberships:
        log_security(session, "account_deleted", user_id=user.id, email=user.email,
                     ip=client.ip)
    mail.queue_email(session, user.email, "account_deleted", {"email": user.email},
                     idempotency_key=f"account-deleted/{user.id}")
    # Sessions go with the row (ON DELETE CASCADE); keys made elsewhere were revoked above.
    session.execute(delete(User).where(User.id == user.id))
