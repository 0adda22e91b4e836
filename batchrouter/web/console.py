"""Console pages: dashboard, account (profile, email, password, sessions, recent activity,
account deletion)."""
from __future__ import annotations

import functools

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from batchrouter import accounts, apikeys, batches, ledger, profile, records
from batchrouter.errors import DomainError, ValidationFailed
from batchrouter.extensions import account_settings, client, db_session
from batchrouter.models import User, Workspace
from batchrouter.tokens import TokenExpired, TokenInvalid
from batchrouter.web.htmx import render
from batchrouter.web.session import forget_cookie

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
    workspace = session.get(Workspace, current_user.workspace_id) \
        if current_user.workspace_id else None
    if workspace is None:  # left or was removed from every workspace
        return render_template("console/no_workspace.html")
    balances = ledger.balances(session, workspace.id)
    keys = apikeys.list_keys(session, workspace.id)
    spend = ledger.daily_spend(session, workspace.id)
    return render_template("console/dashboard.html", workspace=workspace, balances=balances,
                           key_count=len(keys), spend=spend, chart=spend_chart(spend),
                           active=batches.active_batches(session, workspace.id),
                           failures=batches.list_batches(session, workspace.id,
                                                         status="failed", limit=5),
                           progress=batches.progress)


def spend_chart(spend: list[tuple[str, int]], width: int = 600, height: int = 120) -> dict:
    """Bar geometry for a server-rendered SVG (no script, CSP-safe attributes only)."""
    peak = max((v for _, v in spend), default=0) or 1
    slot = width / max(len(spend), 1)
    bars = [{"x": round(i * slot + 1, 1), "w": round(max(slot - 2, 1), 1),
             "h": round(v * (height - 4) / peak, 1), "day": day, "value": v}
            for i, (day, v) in enumerate(spend)]
    for bar in bars:
        bar["y"] = round(height - bar["h"], 1)
    return {"bars": bars, "width": width, "height": height, "peak": peak,
            "total": sum(v for _, v in spend)}


def _account_context() -> dict:
    session = db_session()
    return {"memberships": accounts.memberships_of(session, current_user.id),
            "sessions": accounts.sessions_of(session, current_user.id),
            "activity": records.recent_activity(session, current_user.id),
            "blocking": profile.blocking_workspaces(session, current_user.id),
            "label": records.label}


def _back_to_account(message: str, category: str = "success"):
    flash(message, category)
    return redirect(url_for("console.account"), code=303)


@bp.get("/account")
@login_required
def account():
    """Profile, password, active sessions and recent security activity."""
    return render_template("console/account.html", **_account_context())


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
                              keep_session_id=current_user.get_id())
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
    ended = accounts.revoke_sessions(session, current_user.id, except_id=current_user.get_id())
    records.log_security(session, "session_revoked", user_id=current_user.id,
                         ip=client().ip, count=ended)
    session.commit()
    flash(f"Signed out {ended} other session{'s' if ended != 1 else ''}.", "success")
    return redirect(url_for("console.account"), code=303)


@bp.post("/account/sessions/<session_id>/revoke")
@login_required
def revoke_session(session_id: str):
    """Sign out one other session (a lost laptop, a shared computer)."""
    session = db_session()
    try:
        profile.revoke_session(session, current_user.id, session_id,
                               current_id=current_user.get_id(), client=client())
    except DomainError as exc:
        session.rollback()
        return _back_to_account(exc.message, "error")
    session.commit()
    return _back_to_account("That session is signed out.")


@bp.post("/account/email")
@login_required
def change_email():
    """Ask to change the email address: the password first, then a link to the new one."""
    session = db_session()
    user = session.get(User, current_user.id)
    try:
        new_email = profile.request_email_change(
            session, user, request.form.get("current_password", ""),
            request.form.get("new_email", ""), account_settings(), client())
    except DomainError as exc:
        session.rollback()
        return _back_to_account(exc.message, "error")
    session.commit()
    return _back_to_account(f"We sent a confirmation link to {new_email}. Your address "
                            "changes when you open it.", "info")


@bp.get("/account/email/confirm/<token>")
def confirm_email(token: str):
    """Open the link sent to the new address (signed in or not)."""
    g.no_store = True
    session = db_session()
    try:
        user = profile.confirm_email_change(session, token, account_settings(), client())
    except (TokenInvalid, TokenExpired) as exc:
        session.rollback()
        return render_template("auth/verify_failed.html", message=exc.message), 400
    session.commit()
    flash(f"Your email address is now {user.email}.", "success")
    target = "console.account" if current_user.is_authenticated else "auth.login"
    return redirect(url_for(target), code=303)


@bp.post("/account/delete")
@login_required
def delete_account():
    """Delete the account (password again); refused while it is a needed last owner."""
    session = db_session()
    user = session.get(User, current_user.id)
    try:
        profile.delete_account(session, user, request.form.get("current_password", ""),
                               client())
    except DomainError as exc:
        session.rollback()
        return _back_to_account(exc.message, "error")
    session.commit()
    forget_cookie()
    flash("Your account was deleted.", "info")
    return redirect(url_for("auth.login"), code=303)


@bp.get("/account/activity")
@login_required
def activity():
    """The recent-activity region (an htmx fragment or the whole account page)."""
    return render("console/account.html", "console/_activity.html", **_account_context())
