"""Helpers the team tests share: reading emails, roles and events the app committed."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from sqlalchemy import select

from batchrouter.models import EmailMessage, Membership, SecurityEvent, User, UserSession
from tests.factories import read

INVITE_RE = re.compile(r"https?://[^/\s]+(/invitations/[A-Za-z0-9_\-]+)")
EMAIL_CONFIRM_RE = re.compile(r"https?://[^/\s]+(/account/email/confirm/\S+)")


def html(response) -> str:
    return response.get_data(as_text=True)


def redirected_to(response, path: str) -> bool:
    return response.status_code in (302, 303) and \
        urlsplit(response.headers["Location"]).path == path


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The SPEC §6 envelope with the expected status (and code)."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    error = response.json["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def emails(db, *, template: str | None = None, to: str | None = None) -> list[EmailMessage]:
    def fetch(s):
        stmt = select(EmailMessage).order_by(EmailMessage.created_at, EmailMessage.id)
        if template:
            stmt = stmt.where(EmailMessage.template == template)
        if to:
            stmt = stmt.where(EmailMessage.to == to)
        return list(s.scalars(stmt))
    return read(db, fetch)


def invitation_path(db, to: str) -> str:
    """The path of the newest invitation link emailed to `to`."""
    [*_, message] = emails(db, template="invitation", to=to)
    return INVITE_RE.search(message.text).group(1)


def role_of(db, workspace_id: str, email: str) -> str | None:
    return read(db, lambda s: s.scalars(
        select(Membership.role).join(User).where(Membership.workspace_id == workspace_id,
                                                 User.email == email)).first())


def events(db, kind: str, workspace_id: str | None = None) -> list[SecurityEvent]:
    def fetch(s):
        stmt = select(SecurityEvent).where(SecurityEvent.kind == kind)
        if workspace_id:
            stmt = stmt.where(SecurityEvent.workspace_id == workspace_id)
        return list(s.scalars(stmt.order_by(SecurityEvent.created_at)))
    return read(db, fetch)


def session_workspace(db, user_id: str) -> list[str | None]:
    """The workspace each live console session of the user is looking at."""
    return read(db, lambda s: list(s.scalars(select(UserSession.workspace_id).where(
        UserSession.user_id == user_id, UserSession.revoked_at.is_(None)))))


def user_by_email(db, email: str) -> User | None:
    return read(db, lambda s: s.scalars(select(User).where(User.email == email)).first())
