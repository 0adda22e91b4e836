"""Operator pages: the local email outbox, error-reference lookup, the operators list."""
from __future__ import annotations

import functools

from flask import Blueprint, abort, render_template, request
from flask_login import current_user, login_required

from batchrouter import email as mail
from batchrouter import queue, support, teams
from batchrouter.extensions import db_session, runtime
from batchrouter.models import ErrorReport

bp = Blueprint("operator", __name__, url_prefix="/operator")


def operator_required(view):
    @functools.wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not current_user.is_operator:
            abort(403)
        return view(*args, **kwargs)
    return wrapped


@bp.get("/emails")
@operator_required
def emails():
    """Every email the installation sent or held in its local outbox."""
    to = (request.args.get("to") or "").strip() or None
    return render_template("operator/emails.html",
                           messages=mail.recent_messages(db_session(), 100, to=to), to=to or "")


@bp.get("/errors")
@operator_required
def errors():
    """Look up an error reference a user quoted."""
    ref = (request.args.get("ref") or "").strip()
    report = db_session().get(ErrorReport, ref) if ref else None
    path = (request.args.get("path") or "").strip()
    return render_template("operator/errors.html", ref=ref, report=report, path=path,
                           recent=support.recent_errors(db_session(), path=path or None))


@bp.get("/system")
@operator_required
def system():
    """Workers with their last heartbeat, queue depths by state and the outbox backlog."""
    redis = runtime().redis
    from flask import current_app

    return render_template("operator/system.html", workers=queue.worker_heartbeats(redis),
                           queues=queue.queue_states(redis, current_app.config["BATCHROUTER_QUEUES"]),
                           pending=queue.pending_outbox(db_session()))


@bp.get("/operators")
@operator_required
def operators():
    """Who holds the site-wide operator flag (granted with `users create --operator`)."""
    return render_template("operator/operators.html",
                           operators=teams.list_operators(db_session()))
