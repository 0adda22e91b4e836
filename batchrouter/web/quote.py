"""Console "New batch": paste or upload a manifest, pick controls, see preflight or the quote."""
from __future__ import annotations

from flask import Blueprint, render_template, request
from flask_login import current_user

from batchrouter import ledger, manifest, quotes, routing
from batchrouter.errors import DomainError
from batchrouter.extensions import db_session, quote_settings
from batchrouter.web.console import require_scope
from batchrouter.web.htmx import render

bp = Blueprint("batches_new", __name__, url_prefix="/batches")

FORM_CONTROLS = ("routing_mode", "sla_tier", "privacy_tier")


def _choices() -> dict:
    return {"routing_modes": routing.ROUTING_MODES, "sla_tiers": tuple(routing.SLA_WINDOWS),
            "privacy_tiers": routing.PRIVACY_TIERS}


def _manifest_lines():
    """Lines from the uploaded file, else from the textarea (JSONL, or one JSON array)."""
    upload = request.files.get("file")
    if upload is not None and upload.filename:
        return manifest.iter_lines(upload.stream)
    text = (request.form.get("manifest") or "").strip()
    if text.startswith("["):
        import json

        try:
            items = json.loads(text)
        except ValueError:
            items = None
        if isinstance(items, list):
            return manifest.encode_items(items)
    return (line + b"\n" for line in text.encode("utf-8").split(b"\n"))


def _controls_data() -> dict:
    data = {k: request.form[k] for k in FORM_CONTROLS if request.form.get(k)}
    if request.form.get("max_price"):
        data["max_price"] = {"currency": "usd", "amount": request.form["max_price"].strip()}
    return data


@bp.get("/new")
@require_scope("quote")
def new():
    """The New batch page."""
    return render_template("batches/new.html", form={}, **_choices())


@bp.post("/new/quote")
@require_scope("quote")
def quote():
    """Preflight + quote the submitted manifest; the result region (htmx) or the whole page."""
    session = db_session()
    context = {"form": request.form, **_choices()}
    try:
        controls = quotes.parse_controls(_controls_data())
        settings = quote_settings()
        report = quotes.preflight(_manifest_lines(), quotes.model_operations(session),
                                  settings.limits)
        result = quotes.create_quote(session, settings, workspace_id=current_user.workspace_id,
                                     mode="live", report=report, controls=controls)
    except manifest.PreflightFailed as exc:
        session.rollback()
        response = render("batches/new.html", "batches/_quote.html",
                          report=exc.report.to_json(), **context)
        response.status_code = 422
        return response
    except DomainError as exc:
        session.rollback()
        response = render("batches/new.html", "batches/_quote.html", error=exc.message,
                          error_details=exc.details, **context)
        response.status_code = exc.status
        return response
    session.commit()
    available = ledger.balances(session, current_user.workspace_id).available
    return render("batches/new.html", "batches/_quote.html",
                  quote=quotes.to_json(result, available=available), **context)


