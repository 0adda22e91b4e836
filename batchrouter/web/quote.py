"""Console "New batch": paste or upload a manifest, pick controls, see preflight or the quote."""
from __future__ import annotations

import io
import json

from flask import Blueprint, flash, render_template, request, url_for
from flask_login import current_user

from batchrouter import analytics, batches, files, ledger, manifest, privacy, quotes, routing
from batchrouter.errors import DomainError
from batchrouter.extensions import db_session, quote_settings, runtime
from batchrouter.web.consent import track_event
from batchrouter.web.console import require_scope
from batchrouter.web.htmx import redirect_to, render

bp = Blueprint("batches_new", __name__, url_prefix="/batches")

FORM_CONTROLS = ("routing_mode", "sla_tier", "privacy_tier")


def _choices() -> dict:
    return {"routing_modes": routing.ROUTING_MODES, "sla_tiers": tuple(routing.SLA_WINDOWS),
            "privacy_tiers": routing.PRIVACY_TIERS}


def _manifest_stream():
    """The uploaded file, else the textarea (JSONL, or one JSON array) as a byte stream."""
    upload = request.files.get("file")
    if upload is not None and upload.filename:
        return upload.stream, upload.filename
    text = (request.form.get("manifest") or "").strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            items = None
        if isinstance(items, list):
            return io.BytesIO(b"".join(manifest.encode_items(items))), "pasted.jsonl"
    return io.BytesIO(text.encode("utf-8")), "pasted.jsonl"


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
        # Stored as a file so that "Create batch" can submit exactly what was quoted.
        stream, filename = _manifest_stream()
        record, report = files.store_manifest(
            session, runtime().storage, workspace_id=current_user.workspace_id, mode="live",
            stream=stream, filename=filename, purpose="batch",
            models=quotes.model_operations(session), limits=settings.limits)
        session.commit()
        report = quotes.file_report(session, runtime().storage, current_user.workspace_id,
                                    record.id)
        result = quotes.create_quote(session, settings, workspace_id=current_user.workspace_id,
                                     mode="live", report=report, controls=controls,
                                     input_file_id=record.id)
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




@bp.post("/create")
@require_scope("submit")
def create():
    """Create the batch from a quote made on this page (its manifest is the stored file)."""
    session = db_session()
    try:
        privacy.check_not_restricted(session, current_user.id)
        quote = quotes.get_quote(session, current_user.workspace_id, request.form.get("quote_id"))
        source = batches.request_lines(session, runtime().storage, current_user.workspace_id,
                                       {}, quote)
        batch = batches.create_batch(session, quote=quote, source=source)
    except DomainError as exc:
        session.rollback()
        flash(f"The batch was not created: {exc.message}", "error")
        return redirect_to(url_for("batches_new.new"))
    session.commit()
    if analytics.is_first_batch(session, current_user.workspace_id):
        track_event("first_batch")
    flash(f"Batch {batch.id} created; {batch.total} items are on their way.", "success")
    return redirect_to(url_for("batches.detail", batch_id=batch.id))
