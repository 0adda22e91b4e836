"""Operator privacy-request queue (SPEC §10): due dates, overdue highlighting, notes,
extensions and the action each request kind calls for."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from batchrouter import privacy, privacy_actions
from batchrouter.db import utcnow
from batchrouter.errors import DomainError
from batchrouter.extensions import client_ip, db_session, runtime
from batchrouter.models import User
from batchrouter.web.operator import operator_required
from batchrouter.web.privacy import settings

bp = Blueprint("operator_privacy", __name__, url_prefix="/operator/privacy")


def _operator() -> privacy.Operator:
    return privacy.Operator(user_id=current_user.id, email=current_user.email, ip=client_ip())


@bp.get("")
@operator_required
def queue():
    """Confirmed requests by due date; overdue ones stand out."""
    status = request.args.get("status") or None
    if status not in (None, *privacy.STATUSES):
        status = None
    return render_template("operator/privacy_queue.html",
                           requests=privacy.queue(db_session(), status), status=status,
                           statuses=privacy.STATUSES, kinds=privacy.KINDS,
                           overdue=privacy.is_overdue, now=utcnow())


@bp.get("/<request_id>")
@operator_required
def detail(request_id: str):
    session = db_session()
    found = privacy.get(session, request_id)
    account = session.get(User, found.user_id) if found.user_id else None
    return render_template("operator/privacy_detail.html", r=found, account=account,
                           kinds=privacy.KINDS, overdue=privacy.is_overdue(found),
                           restricted=privacy.is_restricted(session, found.user_id))


def _act(request_id: str, action, success: str):
    """Run one queue action in a transaction; the page says what happened or why not."""
    session = db_session()
    found = privacy.get(session, request_id)
    try:
        outcome = action(session, found)
    except DomainError as exc:
        session.rollback()
        flash(exc.message, "error")
        return redirect(url_for("operator_privacy.detail", request_id=request_id), code=303)
    session.commit()
    for key in (outcome or {}).get("storage_keys", []) if isinstance(outcome, dict) else []:
        runtime().storage.delete(key)  # erased files go once the transaction is committed
    flash(success, "success")
    return redirect(url_for("operator_privacy.detail", request_id=request_id), code=303)


@bp.post("/<request_id>/start")
@operator_required
def start(request_id: str):
    return _act(request_id, lambda s, r: privacy.start(s, settings(), r, _operator()),
                "Marked in progress; the requester was told.")


@bp.post("/<request_id>/note")
@operator_required
def note(request_id: str):
    return _act(request_id,
                lambda s, r: privacy.add_note(s, r, _operator(), request.form.get("text", "")),
                "Note added.")


@bp.post("/<request_id>/extend")
@operator_required
def extend(request_id: str):
    raw = request.form.get("months", "")
    months = int(raw) if raw.isdigit() else 0
    return _act(request_id,
                lambda s, r: privacy.extend(s, settings(), r, _operator(), months,
                                            request.form.get("reason", "")),
                "Due date extended; the reason was emailed to the requester.")


@bp.post("/<request_id>/reject")
@operator_required
def reject(request_id: str):
    return _act(request_id,
                lambda s, r: privacy.close(s, settings(), r, _operator(), status="rejected",
                                           reply=request.form.get("reply", "")),
                "Request rejected; the requester was told why.")


@bp.post("/<request_id>/complete")
@operator_required
def complete(request_id: str):
    return _act(request_id,
                lambda s, r: privacy.close(s, settings(), r, _operator(), status="done",
                                           reply=request.form.get("reply", "")),
                "Request closed as done; the reply was emailed.")


@bp.post("/<request_id>/perform")
@operator_required
def perform(request_id: str):
    """The action for the request's kind (export, deletion, correction, restriction, …)."""
    return _act(request_id,
                lambda s, r: privacy_actions.perform(s, settings(), r, _operator(),
                                                     request.form.to_dict()),
                "Action carried out; the requester was emailed.")


@bp.post("/<request_id>/lift")
@operator_required
def lift(request_id: str):
    """Lift a processing restriction: the account may start batches again."""
    return _act(request_id,
                lambda s, r: privacy_actions.lift_restriction(s, r.user_id, _operator()),
                "Restriction lifted.")
