"""Flask-Login wiring: the cookie holds a server-side session id, checked on every request."""
from __future__ import annotations

from flask import current_app
from flask import session as cookie
from flask_login import UserMixin, login_user, logout_user

from batchrouter import accounts
from batchrouter.extensions import client, commit_bookkeeping, db_session, login_manager
from batchrouter.models import User, UserSession


class ConsoleUser(UserMixin):
    """The signed-in user as views see them: who, which workspace, which role.

    Plain values read with the session on every request; the ORM records (`record`, `user`)
    load on first use, by the few views that change them or show more of the user."""

    def __init__(self, found: accounts.ConsoleSession, record: UserSession | None = None,
                 user: User | None = None):
        self._found = found
        self._record = record
        self._user = user
        self.role = found.role

    def get_id(self) -> str:
        return self._found.id

    @property
    def id(self) -> str:
        return self._found.user_id

    @property
    def email(self) -> str:
        return self._found.email

    @property
    def workspace_id(self) -> str | None:
        # A view that moved this session (switch, create, accept) sees the move at once.
        return self._record.workspace_id if self._record is not None \
            else self._found.workspace_id

    @property
    def is_operator(self) -> bool:
        return self._found.is_operator

    @property
    def is_verified(self) -> bool:
        return self._found.is_verified

    @property
    def record(self) -> UserSession:
        if self._record is None:
            self._record = db_session().get(UserSession, self._found.id)
        return self._record

    @property
    def user(self) -> User:
        if self._user is None:
            self._user = db_session().get(User, self._found.user_id)
        return self._user


@login_manager.user_loader
def load_user(session_id: str):
    cfg = current_app.config
    session = db_session()
    found = accounts.console_session(session, session_id,
                                     idle_ttl=cfg["BATCHROUTER_SESSION_IDLE_TTL"],
                                     absolute_ttl=cfg["BATCHROUTER_SESSION_ABSOLUTE_TTL"])
    if found is None:
        return None
    if found.workspace_id and found.role is None:
        # No longer a member there (teams.py normally moves sessions on): never show it.
        remaining = accounts.memberships_of(session, found.user_id)
        found = found._replace(workspace_id=remaining[0].workspace_id if remaining else None,
                               role=remaining[0].role if remaining else None)
        _bookkeeping(session, lambda: accounts.move_session(session, found.id,
                                                            found.workspace_id))
    if accounts.seen_long_ago(found):
        _bookkeeping(session, lambda: accounts.note_seen(session, found.id))
    return ConsoleUser(found)


def _bookkeeping(session, write) -> None:
    """A best-effort write while reading (last seen, workspace moved on): if SQLite refuses it
    because a worker committed meanwhile, drop it rather than fail the page."""
    from sqlalchemy.exc import OperationalError

    try:
        write()
    except OperationalError:
        session.rollback()
        return
    commit_bookkeeping(session)


def sign_in(user: User) -> None:
    """Start a fresh server-side session and a fresh cookie (no session fixation)."""
    session = db_session()
    record = accounts.start_session(session, user, client())
    session.commit()
    cookie.clear()
    cookie.permanent = True
    found = accounts.ConsoleSession(record.id, user.id, record.workspace_id, record.last_seen_at,
                                    user.email, user.is_verified, user.is_operator, None)
    login_user(ConsoleUser(found, record=record, user=user))


def sign_out(console_user: ConsoleUser) -> None:
    session = db_session()
    accounts.end_session(session, console_user.get_id(), client())
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
