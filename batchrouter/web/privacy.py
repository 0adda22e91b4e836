"""Privacy request form (public and in the console), the emailed confirmation, and the
signed export download (SPEC §10, §12 `/privacy/request`)."""
from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, render_template, request
from flask_login import current_user, login_required

from batchrouter import consent, privacy, privacy_actions
from batchrouter.errors import ValidationFailed
from batchrouter.extensions import client_ip, db_session, limiter, runtime
from batchrouter.models import Workspace
from batchrouter.tokens import TokenExpired, TokenInvalid

bp = Blueprint("privacy", __name__)


def settings() -> privacy.Settings:
    cfg = current_app.config
    return privacy.Settings(secret=cfg["SECRET_KEY"], base_url=cfg["BASE_URL"].rstrip("/"),
                            operator_name=cfg["OPERATOR_NAME"],
                            confirm_ttl=cfg["BATCHROUTER_PRIVACY_CONFIRM_TTL"],
                            export_ttl=cfg["BATCHROUTER_EXPORT_URL_TTL"],
                            policy_version=cfg["BATCHROUTER_POLICY_VERSION"])


def _prefill() -> dict:
    if not current_user.is_authenticated:
        return {}
    workspace = db_session().get(Workspace, current_user.workspace_id) \
        if current_user.workspace_id else None
    return {"email": current_user.email, "workspace_name": workspace.name if workspace else ""}


def _submit(template: str, **context):
    form = request.form
    session = db_session()
    try:
        privacy.submit(session, settings(), kind=form.get("kind", ""),
                       email=form.get("email", ""), workspace_name=form.get("workspace_name"),
                       details=form.get("details"),
                       submitted_by_id=current_user.id if current_user.is_authenticated else None,
                       ip=client_ip())
    except ValidationFailed as exc:
        session.rollback()
        return render_template(template, form=form, kinds=privacy.KINDS, error=exc.message,
                               **context), 422
    session.commit()
    # The same answer for every address: it never says whether an account exists.
    return render_template("privacy/sent.html", email=form.get("email", "").strip())


@bp.route("/privacy/request", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["BATCHROUTER_PRIVACY_REQUEST_LIMIT"],
               key_func=client_ip, methods=["POST"])
def request_form():
    """Public privacy request form; confirmed by an emailed link before it is queued."""
    if request.method == "GET":
        return render_template("privacy/request.html", form=_prefill(), kinds=privacy.KINDS)
    return _submit("privacy/request.html")


@bp.get("/privacy/request/confirm/<token>")
def confirm_page(token: str):
    """Show what is being confirmed; the state changes only on the POST (mail scanners GET)."""
    try:
        found = privacy.request_for_token(db_session(), settings(), token)
    except (TokenInvalid, TokenExpired) as exc:
        return render_template("privacy/confirm_failed.html", message=exc.message), 400
    if found.status != "unconfirmed":
        return render_template("privacy/confirm_failed.html",
                               message="This request is already confirmed; we are on it."), 400
    return render_template("privacy/confirm.html", token=token, kind=privacy.KINDS[found.kind])


@bp.post("/privacy/request/confirm/<token>")
def confirm(token: str):
    session = db_session()
    try:
        found = privacy.confirm(session, settings(), token, ip=client_ip())
    except (TokenInvalid, TokenExpired) as exc:
        session.rollback()
        return render_template("privacy/confirm_failed.html", message=exc.message), 400
    session.commit()
    return render_template("privacy/confirmed.html", found=found)


@bp.get("/privacy/export/<token>")
def export_download(token: str):
    """The archive an access/export request produced, through its signed 7-day link."""
    try:
        found = privacy_actions.resolve_export(db_session(), settings(), token)
    except (TokenInvalid, TokenExpired) as exc:
        return render_template("privacy/confirm_failed.html", message=exc.message), 403
    storage = runtime().storage
    if not storage.exists(found.export_key):
        abort(404)
    handle = storage.open(found.export_key)
    response = Response(iter(lambda: handle.read(1 << 16), b""), mimetype="application/zip",
                        headers={"Content-Disposition":
                                 f'attachment; filename="privacy-export-{found.id}.zip"',
                                 "Cache-Control": "no-store"})
    response.call_on_close(handle.close)
    return response


@bp.route("/account/privacy", methods=["GET", "POST"])
@login_required
@limiter.limit(lambda: current_app.config["BATCHROUTER_PRIVACY_REQUEST_LIMIT"],
               key_func=client_ip, methods=["POST"])
def center():
    """Privacy center: the prefilled request form, your requests and your cookie choices."""
    session = db_session()
    context = {"requests": privacy.requests_of(session, current_user.email),
               "consents": consent.records_of_user(session, current_user.id)[-20:][::-1],
               "restricted": privacy.is_restricted(session, current_user.id)}
    if request.method == "POST":
        return _submit("privacy/center.html", **context)
    return render_template("privacy/center.html", form=_prefill(), kinds=privacy.KINDS,
                           **context)



