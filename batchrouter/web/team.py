"""Team pages: members and roles, invitations, rename, transfer, leave, the workspace's
security activity, switching and creating workspaces, and accepting an invitation."""
from __future__ import annotations

import functools

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required

from batchrouter import accounts, records, teams
from batchrouter.errors import DomainError
from batchrouter.extensions import account_settings, client, client_ip, db_session, limiter
from batchrouter.models import User, Workspace
from batchrouter.models.accounts import ROLES
from batchrouter.tokens import TokenExpired, TokenInvalid
from batchrouter.web.htmx import is_fragment_request, redirect_to, render
from batchrouter.web.session import sign_in

bp = Blueprint("team", __name__)


def require_role(minimum: str):
    """The signed-in user's role in the current workspace must be at least `minimum`."""
    def decorator(view):
        @functools.wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if not current_user.workspace_id or not teams.has_role(current_user.role, minimum):
                abort(403)
            return view(*args, **kwargs)
        return wrapped
    return decorator


def actor() -> teams.Actor:
    return teams.Actor(user_id=current_user.id, role=current_user.role,
                       email=current_user.email, ip=client_ip())


@bp.app_context_processor
def workspace_context():
    """`workspace_choices()` for the nav's switcher, queried only when a page asks."""
    def workspace_choices():
        if not current_user.is_authenticated:
            return []
        return teams.workspace_choices(db_session(), current_user.id)
    return {"workspace_choices": workspace_choices}


# --- the team page --------------------------------------------------------------------------

def _members_context(**extra) -> dict:
    session = db_session()
    workspace_id = current_user.workspace_id
    return {"workspace": session.get(Workspace, workspace_id),
            "members": teams.members(session, workspace_id),
            "invitations": teams.pending_invitations(session, workspace_id)
            if teams.has_role(current_user.role, "admin") else [],
            "roles": ROLES, "has_role": teams.has_role, **extra}


def _members_region(status: int = 200, **extra):
    response = render("team/index.html", "team/_members.html", **_members_context(**extra))
    response.status_code = status
    return response


def _after_change(message: str):
    """htmx swaps in the fresh members region; a plain form gets Post/Redirect/Get."""
    db_session().commit()
    if is_fragment_request():
        return _members_region(notice=message)
    flash(message, "success")
    return redirect(url_for("team.index"), code=303)


def _refused(exc: DomainError):
    db_session().rollback()
    if is_fragment_request():
        # 422 whatever the refusal (403, 404, 409): base.html's htmx config swaps 422 in, so
        # the message shows in the region instead of being dropped as an error.
        return _members_region(status=422, error=exc.message)
    flash(exc.message, "error")
    return redirect(url_for("team.index"), code=303)


@bp.get("/team")
@require_role("viewer")
def index():
    """Members and roles; admins also see invitations and the management forms."""
    return _members_region()


@bp.post("/team/invitations")
@require_role("admin")
def invite():
    """Email an invitation link for a role."""
    email = request.form.get("email", "")
    try:
        teams.invite(db_session(), current_user.workspace_id, email,
                     request.form.get("role", "member"), actor(),
                     base_url=current_app.config["BASE_URL"].rstrip("/"),
                     ttl=current_app.config["BATCHROUTER_INVITE_TTL"])
    except DomainError as exc:
        return _refused(exc)
    return _after_change(f"Invitation sent to {email.strip()}.")


@bp.post("/team/invitations/<invitation_id>/revoke")
@require_role("admin")
def revoke_invitation(invitation_id: str):
    """Withdraw a pending invitation."""
    try:
        invitation = teams.revoke_invitation(db_session(), current_user.workspace_id,
                                             invitation_id, actor())
    except DomainError as exc:
        return _refused(exc)
    return _after_change(f"Invitation to {invitation.email} withdrawn.")


@bp.post("/team/members/<user_id>/role")
@require_role("admin")
def change_role(user_id: str):
    """Give a member another role."""
    try:
        member = teams.change_role(db_session(), current_user.workspace_id, user_id,
                                   request.form.get("role", ""), actor())
    except DomainError as exc:
        return _refused(exc)
    return _after_change(f"{member.user.email} is now {member.role}.")


@bp.post("/team/members/<user_id>/remove")
@require_role("admin")
def remove_member(user_id: str):
    """Remove a member from the workspace."""
    if user_id == current_user.id:
        return leave()
    session = db_session()
    target = session.get(User, user_id)
    try:
        teams.remove_member(session, current_user.workspace_id, user_id, actor())
    except DomainError as exc:
        return _refused(exc)
    return _after_change(f"{target.email if target else 'The member'} was removed.")


@bp.post("/team/leave")
@require_role("viewer")
def leave():
    """Leave the current workspace (the last owner cannot)."""
    session = db_session()
    name = session.get(Workspace, current_user.workspace_id).name
    try:
        teams.leave(session, current_user.workspace_id, actor())
    except DomainError as exc:
        return _refused(exc)
    session.commit()
    flash(f"You left {name}.", "success")
    return redirect_to(url_for("console.dashboard"))


@bp.post("/team/transfer")
@require_role("owner")
def transfer():
    """Hand the workspace to another member; you stay on as an admin."""
    try:
        member = teams.transfer_ownership(db_session(), current_user.workspace_id,
                                          request.form.get("user_id", ""), actor())
    except DomainError as exc:
        return _refused(exc)
    db_session().commit()
    flash(f"{member.user.email} now owns this workspace; you are an admin.", "success")
    return redirect_to(url_for("team.index"))


@bp.post("/team/rename")
@require_role("admin")
def rename():
    """Rename the workspace."""
    try:
        workspace = teams.rename_workspace(db_session(), current_user.workspace_id,
                                           request.form.get("name", ""), actor())
    except DomainError as exc:
        return _refused(exc)
    db_session().commit()
    flash(f"Workspace renamed to “{workspace.name}”.", "success")
    return redirect_to(url_for("team.index"))


@bp.get("/team/activity")
@require_role("admin")
def activity():
    """The workspace's security events, newest first, with "older" paging."""
    session = db_session()
    events, has_more = teams.workspace_events(session, current_user.workspace_id,
                                              before=request.args.get("before"))
    return render("team/activity.html", "team/_activity.html",
                  workspace=session.get(Workspace, current_user.workspace_id), events=events,
                  has_more=has_more, emails=teams.actor_emails(session, events),
                  label=records.label, describe=teams.describe)


# --- switching and creating workspaces -------------------------------------------------------

@bp.post("/workspaces/switch")
@login_required
def switch():
    """Look at another of your workspaces (this session only)."""
    session = db_session()
    try:
        teams.switch_workspace(session, current_user.record, request.form.get("workspace_id", ""))
    except DomainError as exc:
        session.rollback()
        abort(exc.status)
    session.commit()
    return redirect_to(url_for("console.dashboard"))


@bp.post("/workspaces")
@login_required
def create_workspace():
    """Create another workspace you own, and switch to it."""
    session = db_session()
    user = session.get(User, current_user.id)
    try:
        workspace = teams.create_workspace(session, user, request.form.get("name", ""),
                                           account_settings(), actor())
    except DomainError as exc:
        session.rollback()
        flash(exc.message, "error")
        # The form is on the Team page, or on the dashboard of someone without a workspace.
        return redirect_to(url_for("team.index" if current_user.role else "console.dashboard"))
    current_user.record.workspace_id = workspace.id
    session.commit()
    flash(f"Workspace “{workspace.name}” created.", "success")
    return redirect_to(url_for("console.dashboard"))


# --- accepting an invitation ------------------------------------------------------------------

def _private(body: str, status: int = 200):
    """Invitation pages carry the link's token in their URL: never cache or leak it."""
    g.no_store = True
    response = make_response(body, status)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _invitation_page(token: str, status: int = 200, **extra):
    session = db_session()
    try:
        invitation = teams.find_invitation(session, token)
    except (TokenInvalid, TokenExpired) as exc:
        return _private(render_template("team/invitation_failed.html", message=exc.message),
                        400)
    inviter = session.get(User, invitation.invited_by_id) if invitation.invited_by_id else None
    member = current_user.is_authenticated and accounts.role_in(
        session, current_user.id, invitation.workspace_id) is not None
    return _private(render_template(
        "team/invitation.html", token=token, invitation=invitation, inviter=inviter,
        workspace=session.get(Workspace, invitation.workspace_id), already_member=member,
        account_exists=accounts.find_user_by_email(session, invitation.email) is not None,
        form=request.form, **extra), status)


@bp.get("/invitations/<token>")
def invitation(token: str):
    """What the emailed link opens: accept (signed in), or sign in / sign up to accept."""
    return _invitation_page(token)


@bp.post("/invitations/<token>/accept")
@login_required
def accept(token: str):
    """Join the workspace with the invited role and switch this session to it."""
    session = db_session()
    user = session.get(User, current_user.id)
    try:
        member = teams.accept_invitation(session, token, user, record=current_user.record,
                                         client=client())
    except DomainError as exc:
        session.rollback()
        return _invitation_page(token, status=exc.status, error=exc.message)
    session.commit()
    flash(f"You joined {member.workspace.name} as {member.role}.", "success")
    return redirect(url_for("console.dashboard"), code=303)


@bp.post("/invitations/<token>/signup")
@limiter.limit(lambda: current_app.config["BATCHROUTER_RECOVERY_LIMIT_IP"],
               key_func=client_ip)
def signup(token: str):
    """Create an account for the invited address, join, and sign in."""
    session = db_session()
    try:
        user = teams.sign_up_invitee(session, token, request.form.get("password", ""),
                                     account_settings(), client(),
                                     name=request.form.get("name"))
    except DomainError as exc:
        session.rollback()
        return _invitation_page(token, status=exc.status, error=exc.message)
    session.commit()
    sign_in(user)
    workspace = session.get(Workspace, accounts.memberships_of(session, user.id)[0].workspace_id)
    flash(f"Welcome to {workspace.name}.", "success")
    return redirect(url_for("console.dashboard"), code=303)
