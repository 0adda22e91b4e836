"""Billing console: balance, packs and checkout, purchases, the ledger and its CSV export,
billing settings (SPEC §8, §9). Everything here needs the `billing` scope (owner, admin)."""
from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user
from sqlalchemy import select

from batchrouter import batches, billing, ledger, security, statements, stripe_api
from batchrouter.errors import DomainError
from batchrouter.extensions import client_ip, db_session
from batchrouter.models import Purchase
from batchrouter.web.console import require_scope
from batchrouter.web.htmx import render

bp = Blueprint("billing", __name__, url_prefix="/billing")

TERMINAL = ("granted", "expired", "failed")


def _with_checkout_csp(response):
    """The Buy form's POST answers with a redirect to Stripe: CSP form-action must allow it."""
    origins = " ".join(stripe_api.checkout_origins(current_app.config))
    response.headers["Content-Security-Policy"] = security.CSP.replace(
        "form-action 'self'", f"form-action 'self' {origins}")
    return response


def _ledger_context() -> dict:
    session = db_session()
    filters = statements.parse_filters(request.args)
    entries, cursor = statements.page(session, current_user.workspace_id, filters,
                                      cursor=request.args.get("cursor") or None, limit=25)
    filter_args = {k: v for k, v in request.args.items()
                   if k in ("kind", "batch_id", "since", "until") and v}
    return {"entries": entries, "next_cursor": cursor, "filters": request.args,
            "filter_args": filter_args,
            "kinds": statements.KINDS}


def _page_context() -> dict:
    session = db_session()
    workspace_id = current_user.workspace_id
    settings = billing.settings_of(session, workspace_id, create=False)
    balances = ledger.balances(session, workspace_id)
    threshold = billing.low_balance_threshold(current_app.config, settings)
    purchases = list(session.scalars(select(Purchase).where(Purchase.workspace_id == workspace_id)
                                     .order_by(Purchase.created_at.desc()).limit(20)))
    return {"balances": balances, "threshold": threshold, "settings": settings,
            "spent_month": statements.spent_this_month(session, workspace_id),
            "packs": stripe_api.packs(current_app.config), "purchases": purchases,
            "recent_batches": batches.list_batches(session, workspace_id, limit=10),
            "configured": stripe_api.is_configured(current_app.config),
            "canceled": request.args.get("canceled"),
            "webhook_url": current_app.config["BASE_URL"].rstrip("/") + "/webhooks/stripe",
            **_ledger_context()}


@bp.get("")
@require_scope("billing")
def index():
    return _with_checkout_csp(render("billing/index.html", "billing/_ledger.html",
                                     **_page_context()))


@bp.get("/ledger")
@require_scope("billing")
def ledger_region():
    """The ledger table with its filters and paging (an htmx fragment or the whole page)."""
    try:
        return _with_checkout_csp(render("billing/index.html", "billing/_ledger.html",
                                         **_page_context()))
    except DomainError as exc:
        flash(exc.message, "error")
        return redirect(url_for("billing.index"), code=303)


@bp.get("/ledger.csv")
@require_scope("billing")
def ledger_csv():
    """Every matching transaction as CSV (formula-safe cells)."""
    filters = statements.parse_filters(request.args)
    session, workspace_id = db_session(), current_user.workspace_id
    return Response(stream_with_context(statements.export_csv(session, workspace_id, filters)),
                    mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="ledger-{workspace_id}.csv"'})


@bp.post("/checkout")
@require_scope("billing")
def checkout():
    """Buy a pack: create the Checkout Session and send the browser to Stripe."""
    session = db_session()
    try:
        purchase = billing.start_checkout(session, current_app.config,
                                          workspace_id=current_user.workspace_id,
                                          pack_id=request.form.get("pack", ""),
                                          user_id=current_user.id)
    except DomainError as exc:
        session.rollback()
        flash(exc.message, "error")
        return redirect(url_for("billing.index"), code=303)
    session.commit()
    return redirect(purchase.checkout_url, code=303)


def _purchase(purchase_id: str) -> Purchase:
    found = db_session().get(Purchase, purchase_id)
    if found is None or found.workspace_id != current_user.workspace_id:
        abort(404)
    return found


@bp.get("/purchases/<purchase_id>")
@require_scope("billing")
def purchase(purchase_id: str):
    """Where Stripe sends the browser back: it never grants, it shows and polls."""
    g.no_store = True
    found = _purchase(purchase_id)
    return render("billing/purchase.html", "billing/_purchase_status.html", purchase=found,
                  terminal=TERMINAL, balances=ledger.balances(db_session(), found.workspace_id))


@bp.post("/settings")
@require_scope("billing")
def settings():
    """Billing email and low-balance threshold."""
    session = db_session()
    try:
        billing.update_settings(session, current_user.workspace_id,
                                billing_email=request.form.get("billing_email", ""),
                                threshold=request.form.get("low_balance_threshold", ""),
                                actor_id=current_user.id, ip=client_ip())
        billing.check_low_balance(session, current_app.config, current_user.workspace_id)
    except DomainError as exc:
        session.rollback()
        flash(exc.message, "error")
        return redirect(url_for("billing.index"), code=303)
    session.commit()
    flash("Billing settings saved.", "success")
    return make_response(redirect(url_for("billing.index"), code=303))
