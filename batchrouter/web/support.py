"""The contact form (SPEC §10 records: support messages)."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template, request
from flask_login import current_user

from batchrouter import support
from batchrouter.errors import ValidationFailed
from batchrouter.extensions import client_ip, db_session, limiter
from batchrouter.models import Workspace

bp = Blueprint("support", __name__)


def _prefill() -> dict:
    form = {"batch_id": request.args.get("batch_id", ""),
            "error_reference": request.args.get("ref", "")}
    if current_user.is_authenticated:
        workspace = db_session().get(Workspace, current_user.workspace_id) \
            if current_user.workspace_id else None
        form |= {"email": current_user.email, "workspace": workspace.name if workspace else ""}
    return form


@bp.route("/support", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["BATCHROUTER_SUPPORT_LIMIT"], key_func=client_ip,
               methods=["POST"])
def contact():
    """Ask for help: workspace, email, batch id and error reference help us find it fast."""
    if request.method == "GET":
        return render_template("support/contact.html", form=_prefill())
    form = request.form
    session = db_session()
    try:
        message = support.submit(
            session, email=form.get("email", ""), subject=form.get("subject", ""),
            message=form.get("message", ""), workspace=form.get("workspace"),
            batch_id=form.get("batch_id"), error_reference=form.get("error_reference"),
            user_id=current_user.id if current_user.is_authenticated else None, ip=client_ip(),
            operator_email=current_app.config["OPERATOR_EMAIL"])
    except ValidationFailed as exc:
        session.rollback()
        return render_template("support/contact.html", form=form, error=exc.message), 422
    session.commit()
    return render_template("support/sent.html", message=message)
