"""Console pages: dashboard, account (profile, sessions, password, recent activity)."""
from __future__ import annotations

import functools

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from batchrouter import accounts, apikeys, ledger, records
from batchrouter.errors import ValidationFailed
from batchrouter.extensions import client, db_session
from batchrouter.models import User, Workspace
from batchrouter.web.htmx import render

bp = Blueprint("console", __name__)


def require_scope(scope: str):
    """The signed-in user's role must allow `scope` (checked here, never only in templates)."""
    def decorator(view):
        @functools.wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if scope not in apikeys.allowed_scopes(current_user.role or ""):
                abort(403)
            return view(*args, **kwargs)
        return wrapped
    return decorator


@bp.get("/")
def dashboard():
    """Signed in: the workspace overview. Signed out: the sign-in page."""
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login"))
    session = db_session()
    workspace = session.get(Workspace, current_user.workspace_id)
    balances = ledger.balances(session, workspace.id) if workspace else None
    keys = apikeys.list_keys(session, workspace.id) if workspace else []
    return render_template("console/dashboard.html", workspace=workspace, balances=balances,
                           key_count=len(keys))


@bp.get("/account")
@login_required
def account():
    """Profile, password, active sessions and recent security activity."""
    session = db_session()
    return render_template(
        "console/account.html",
        memberships=accounts.memberships_of(session, current_user.id),
        sessions=accounts.sessions_of(session, current_user.id),
        activity=records.recent_activity(session, current_user.id),
        label=records.label)


@bp.post("/account/password")
@login_required
def change_password():
    """Change the password (needs the current one) and sign out the other sessions."""
    session = db_session()
    user = session.get(User, current_user.id)
    from batchrouter import passwords

    if not passwords.verify_password(user.password_hash, request.form.get("current_password", "")):
        flash("The current password is not right.", "error")
        return redirect(url_for("console.account"), code=303)
    try:
        accounts.set_password(session, user, request.form.get("new_password", ""),
                              kind="password_changed", client=client(),
                              keep_session_id=current_user.record.id)
    except ValidationFailed as exc:
        session.rollback()
        flash(exc.message, "error")
        return redirect(url_for("console.account"), code=303)
    session.commit()
    flash("Password changed. Your other sessions were signed out.", "success")
    return redirect(url_for("console.account"), code=303)


@bp.post("/account/sessions/revoke-others")
@login_required
def revoke_other_sessions():
    """Sign out every session except this one."""
    session = db_session()
    ended = accounts.revoke_sessions(session, current_user.id, except_id=current_user.record.id)
    records.log_security(session, "session_revoked", user_id=current_user.id,
                         ip=client().ip, count=ended)
    session.commit()
    flash(f"Signed out {ended} other session{'s' if ended != 1 else ''}.", "success")
    return redirect(url_for("console.account"), code=303)


@bp.get("/account/activity")
@login_required
def activity():
    """The recent-activity region (an htmx fragment or the whole account page)."""
    session = db_session()
    return render("console/account.html", "console/_activity.html",
                  memberships=accounts.memberships_of(session, current_user.id),
                  sessions=accounts.sessions_of(session, current_user.id),
                  activity=records.recent_activity(session, current_user.id),
                  label=records.label)
