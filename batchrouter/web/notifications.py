"""Account → email notifications (the opt-in batch-finished email)."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user, login_required

from batchrouter import notifications
from batchrouter.extensions import db_session

bp = Blueprint("notifications", __name__, url_prefix="/account/notifications")


@bp.post("")
@login_required
def update():
    session = db_session()
    enabled = request.form.get("batch_finished") == "1"
    notifications.set_batch_finished(session, current_user.id, enabled)
    session.commit()
    flash("Batch emails turned on." if enabled else "Batch emails turned off.", "success")
    return redirect(url_for("console.account"), code=303)
