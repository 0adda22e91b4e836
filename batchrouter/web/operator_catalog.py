"""Operator catalog page: edit prices, enable or disable offerings and providers."""
from __future__ import annotations

from flask import Blueprint, flash, render_template, request, url_for

from batchrouter import catalog
from batchrouter.errors import DomainError
from batchrouter.extensions import db_session, quote_settings
from batchrouter.web.htmx import redirect_to
from batchrouter.web.operator import operator_required

bp = Blueprint("operator_catalog", __name__, url_prefix="/operator/catalog")


@bp.get("")
@operator_required
def index():
    """Providers and offerings with their prices, editable."""
    session = db_session()
    credentials = quote_settings().credentials
    return render_template("operator/catalog.html", providers=catalog.list_providers(session),
                           models=catalog.list_models(session),
                           version=catalog.version(session),
                           configured=lambda p: catalog.is_configured(p, credentials))


@bp.post("/offerings/<int:offering_id>")
@operator_required
def update_offering(offering_id: int):
    """Save one offering's prices and availability."""
    session = db_session()
    form = request.form
    try:
        offering = catalog.update_offering(
            session, offering_id, input_per_mtok=form.get("input_per_mtok", ""),
            output_per_mtok=form.get("output_per_mtok", ""),
            batch_discount=form.get("batch_discount", "0"), enabled=bool(form.get("enabled")))
    except DomainError as exc:
        session.rollback()
        flash(f"Not saved: {exc.message}", "error")
        return redirect_to(url_for("operator_catalog.index"))
    session.commit()
    flash(f"Saved {offering.lane}.", "success")
    return redirect_to(url_for("operator_catalog.index"))


@bp.post("/providers/<slug>")
@operator_required
def toggle_provider(slug: str):
    """Enable or disable a provider for routing."""
    session = db_session()
    provider = catalog.set_provider_enabled(session, slug, request.form.get("enabled") == "1")
    session.commit()
    flash(f"{provider.name} {'enabled' if provider.enabled else 'disabled'}.", "success")
    return redirect_to(url_for("operator_catalog.index"))
