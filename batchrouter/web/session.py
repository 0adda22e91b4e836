"""Flask-Login wiring: the cookie holds a server-side session id, checked on every request."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, session as cookie
from flask_login import UserMixin, login_user, logout_user

from batchrouter import accounts
from batchrouter.extensions import client, commit_bookkeeping, db_session, login_manager
from batchrouter.models import User, UserSession


@dataclass
class ConsoleUser(UserMixin):
    """The signed-in user as views see them: who, which workspace, which role."""

    user: User
    record: UserSession
    role: str | None

    def get_id(self) -> str:
        return self.record.id

    @property
    def id(self) -> str:
        return self.user.id

    @property
    def email(self) -> str:
        return self.user.email

    @property
    def workspace_id(self) -> str | None:
        return self.record.workspace_id

    @property
    def is_operator(self) -> bool:
        return self.user.is_operator

    @property
    def is_verified(self) -> bool:
        return self.user.is_verified


@login_manager.user_loader
def load_user(session_id: str):
    cfg = current_app.config
    session = db_session()
    found = accounts.console_session(session, session_id,
                                     idle_ttl=cfg["BATCHROUTER_SESSION_IDLE_TTL"],
                                     absolute_ttl=cfg["BATCHROUTER_SESSION_ABSOLUTE_TTL"])
    if found is None:
        return None
    record, user, role = found
    if record.workspace_id and role is None:
        # No longer a member there (teams.py normally moves sessions on): never show it.
        remaining = accounts.memberships_of(session, user.id)
        record.workspace_id = remaining[0].workspace_id if remaining else None
        role = remaining[0].role if remaining else None
    if session.dirty:
        commit_bookkeeping(session)  # last_seen_at, workspace_id
    return ConsoleUser(user=user, record=record, role=role)


def sign_in(user: User) -> None:
    """Start a fresh server-side session and a fresh cookie (no session fixation)."""
    session = db_session()
    record = accounts.start_session(session, user, client())
    session.commit()
    cookie.clear()
    cookie.permanent = True
    login_user(ConsoleUser(user=user, record=record, role=None))


def sign_out(console_user: ConsoleUser) -> None:
    session = db_session()
    accounts.end_session(session, console_user.record.id, client())
    session.commit()
    forget_cookie()


def forget_cookie() -> None:
    """Drop the login from this browser (the server-side record is already gone or ended)."""
    logout_user()
    cookie.clear()


@login_manager.unauthorized_handler
def unauthorized():
    """Send people to sign in; an htmx swap gets HX-Redirect instead of a 302 to swap in."""
    from flask import flash, request, url_for

    from batchrouter.web.htmx import redirect_to

    flash(login_manager.login_message, login_manager.login_message_category)
    next_path = request.full_path.rstrip("?") if request.method == "GET" else None
    return redirect_to(url_for("auth.login", next=next_path))


def init_login(app) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = None  # the server-side record is the protection
