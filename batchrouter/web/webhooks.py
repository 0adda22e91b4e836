"""Console webhooks pages (SPEC §9): the default endpoint, secret rotation, test events, and
per endpoint a delivery log with filters and redeliver."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, request, url_for
from flask_login import current_user

from batchrouter import apikeys
from batchrouter.errors import DomainError
from batchrouter.extensions import db_session
from batchrouter.web.console import require_scope
from batchrouter.web.htmx import redirect_to, render
from batchrouter.webhooks import endpoints, events, log

bp = Blueprint("webhooks", __name__, url_prefix="/webhook-endpoints")
PAGE = 25


def _can_manage() -> bool:
    return "admin" in apikeys.allowed_scopes(current_user.role or "")


def _index_context(**extra) -> dict:
    session = db_session()
    return {"default": endpoints.default_endpoint(session, current_user.workspace_id),
            "endpoints": endpoints.list_endpoints(session, current_user.workspace_id),
            "can_manage": _can_manage(), **extra}


@bp.get("")
@require_scope("read")
def index():
    """The workspace default endpoint and every endpoint with its status."""
    return render("webhooks/index.html", "webhooks/_endpoint.html", **_index_context())


@bp.post("")
@require_scope("admin")
def save():
    """Create or update the default endpoint; a new secret is shown once."""
    g.no_store = True
    session = db_session()
    try:
        url, secret = endpoints.check_registration(
            request.form.get("url", "").strip(), request.form.get("secret") or None,
            allow_private=current_app.config["WEBHOOKS_ALLOW_PRIVATE_TARGETS"])
        _endpoint, shown = endpoints.put_default(session, current_user.workspace_id, url, secret,
                                                key=current_app.config["SECRET_KEY"])
    except DomainError as exc:
        session.rollback()
        response = render("webhooks/index.html", "webhooks/_endpoint.html",
                          **_index_context(error=exc.message, url=request.form.get("url", "")))
        response.status_code = 422
        return response
    session.commit()
    return render("webhooks/index.html", "webhooks/_endpoint.html",
                  **_index_context(new_secret=shown, saved=True))


@bp.post("/rotate")
@require_scope("admin")
def rotate():
    """New generated secret; the old one keeps signing for 24 hours."""
    g.no_store = True
    session = db_session()
    endpoint = endpoints.default_endpoint(session, current_user.workspace_id)
    if endpoint is None:
        return redirect_to(url_for("webhooks.index"))
    shown = endpoints.rotate_secret(session, endpoint, key=current_app.config["SECRET_KEY"])
    session.commit()
    return render("webhooks/index.html", "webhooks/_endpoint.html",
                  **_index_context(new_secret=shown, rotated=True))


@bp.post("/delete")
@require_scope("admin")
def delete():
    session = db_session()
    try:
        endpoints.delete_default(session, current_user.workspace_id)
    except DomainError as exc:
        flash(exc.message, "error")
        return redirect_to(url_for("webhooks.index"))
    session.commit()
    flash("Default webhook endpoint removed.", "success")
    return redirect_to(url_for("webhooks.index"))


def _filters() -> dict:
    args = request.args
    return {"status": args.get("status") if args.get("status") in log.STATUSES else None,
            "event_type": args.get("event_type") if args.get("event_type") in
            (*events.TYPES, events.TEST_TYPE) else None,
            "batch_id": (args.get("batch_id") or "").strip()[:40] or None}


@bp.get("/<endpoint_id>")
@require_scope("read")
def endpoint(endpoint_id: str):
    """One endpoint's deliveries with their attempts; filters and keyset paging."""
    session = db_session()
    target = endpoints.get_endpoint(session, current_user.workspace_id, endpoint_id)
    filters = _filters()
    rows = log.list_deliveries(session, current_user.workspace_id, endpoint_id=target.id,
                               after=request.args.get("after"), limit=PAGE + 1, **filters)
    page = rows[:PAGE]
    next_url = url_for("webhooks.endpoint", endpoint_id=target.id, after=page[-1].id,
                       **{k: v for k, v in filters.items() if v}) if page else None
    return render("webhooks/endpoint.html", "webhooks/_deliveries.html", endpoint=target,
                  deliveries=page, more=len(rows) > PAGE,
                  attempts=log.attempts_of(session, [d.id for d in page]), filters=filters,
                  statuses=log.STATUSES, types=(*events.TYPES, events.TEST_TYPE),
                  can_manage=_can_manage(), next_url=next_url)


@bp.post("/<endpoint_id>/test")
@require_scope("admin")
def send_test(endpoint_id: str):
    session = db_session()
    target = endpoints.get_endpoint(session, current_user.workspace_id, endpoint_id)
    try:
        events.test_event(session, target)
    except DomainError as exc:
        flash(exc.message, "error")
        return redirect_to(url_for("webhooks.endpoint", endpoint_id=endpoint_id))
    session.commit()
    flash("Test event queued; it appears below once delivered.", "success")
    return redirect_to(url_for("webhooks.endpoint", endpoint_id=endpoint_id))


@bp.post("/deliveries/<delivery_id>/redeliver")
@require_scope("admin")
def redeliver(delivery_id: str):
    session = db_session()
    original = events.get_delivery(session, current_user.workspace_id, delivery_id)
    try:
        events.redeliver(session, current_user.workspace_id, delivery_id)
    except DomainError as exc:
        flash(exc.message, "error")
        return redirect_to(url_for("webhooks.endpoint", endpoint_id=original.endpoint_id))
    session.commit()
    flash("Redelivery queued.", "success")
    return redirect_to(url_for("webhooks.endpoint", endpoint_id=original.endpoint_id))
