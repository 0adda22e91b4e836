"""Batch endpoints of SPEC §6: create, list, get, cancel, results, artifacts, receipts,
feedback; and the signed download route."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from batchrouter import artifacts, batches, feedback, finalize, privacy, quotes
from batchrouter.api.auth import current_principal, require
from batchrouter.api.idempotent import idempotent
from batchrouter.api.v1 import json_body
from batchrouter.errors import InvalidRequest, NotFound
from batchrouter.extensions import db_session, runtime
from batchrouter.models import File
from batchrouter.webhooks.endpoints import check_batch_webhook

bp = Blueprint("batches_api", __name__, url_prefix="/v1")


def _limit(default: int = 20, cap: int = 100) -> int:
    raw = request.args.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= cap:
        raise InvalidRequest(f"limit must be 1–{cap}.", code="invalid_limit")
    return int(raw)


def _batch(batch_id: str):
    return batches.get_batch(db_session(), current_principal().workspace_id, batch_id)


@bp.post("/batches")
@require("submit")
@idempotent
def create_batch():
    """Accept a quote: reserve credits, write work units, start dispatch."""
    principal = current_principal()
    data = json_body()
    session = db_session()
    privacy.check_not_restricted(session, principal.user_id)
    quote = quotes.get_quote(session, principal.workspace_id, data.get("quote_id"))
    if quote.mode != principal.mode:
        raise InvalidRequest("The quote was made in another mode (test vs live).",
                             code="mode_mismatch")
    source = batches.request_lines(session, runtime().storage, principal.workspace_id, data,
                                   quote)
    webhook = check_batch_webhook(
        data.get("webhook"), key=current_app.config["SECRET_KEY"],
        allow_private=current_app.config["WEBHOOKS_ALLOW_PRIVATE_TARGETS"])
    batch = batches.create_batch(session, quote=quote, source=source,
                                 metadata=data.get("metadata"), webhook=webhook,
                                 key_id=principal.key_id)
    session.commit()
    return jsonify(batches.to_json(batch)), 201


@bp.get("/batches")
@require("read")
def list_batches():
    """Newest first; `after` is the last id of the previous page; `status` filters."""
    rows = batches.list_batches(db_session(), current_principal().workspace_id,
                                status=request.args.get("status"),
                                before=request.args.get("after"), limit=_limit() + 1)
    limit = _limit()
    page = rows[:limit]
    return jsonify({"object": "list", "data": [batches.to_json(b) for b in page],
                    "has_more": len(rows) > limit,
                    "last_id": page[-1].id if page else None})


@bp.get("/batches/<batch_id>")
@require("read")
def get_batch(batch_id: str):
    """Poll a batch; `?include_billing_receipt=true` adds the billing receipt."""
    batch = _batch(batch_id)
    body = batches.to_json(batch)
    if request.args.get("include_billing_receipt") in ("1", "true"):
        body["billing_receipt"] = finalize.billing_receipt(db_session(), batch)
    return jsonify(body)


@bp.post("/batches/<batch_id>/cancel")
@require("cancel")
def cancel_batch(batch_id: str):
    """Stop dispatch; finished items are delivered and the rest released."""
    session = db_session()
    batch = batches.request_cancel(session, _batch(batch_id))
    session.commit()
    return jsonify(batches.to_json(batch))


@bp.get("/batches/<batch_id>/results")
@require("read")
def results(batch_id: str):
    """Per-item rows in manifest order, cursor paged, filterable by status."""
    batch = _batch(batch_id)
    cursor = request.args.get("cursor", "-1")
    if not cursor.lstrip("-").isdigit():
        raise InvalidRequest("cursor is the next_cursor of the previous page.",
                             code="invalid_cursor")
    rows, next_cursor = batches.result_rows(db_session(), batch.id,
                                            status=request.args.get("status"),
                                            after=int(cursor), limit=_limit(100, 1000))
    return jsonify({"object": "list", "data": rows, "next_cursor": next_cursor})


@bp.get("/batches/<batch_id>/artifact-url")
@require("read")
def artifact_url(batch_id: str):
    """Signed, expiring URLs for the results and errors files."""
    batch = _batch(batch_id)
    if not batch.results_file_id:
        raise NotFound("The artifacts are written when the batch finishes.",
                       code="artifacts_not_ready")
    session = db_session()
    cfg = current_app.config
    ttl = cfg["BATCHROUTER_ARTIFACT_URL_TTL"]
    base = cfg["BASE_URL"].rstrip("/")
    out = {}
    for name, file_id in (("results", batch.results_file_id), ("errors", batch.errors_file_id)):
        out[name] = artifacts.sign_url(cfg["SECRET_KEY"], base, session.get(File, file_id), ttl)
    return jsonify({"object": "artifact_urls", "batch_id": batch.id, **out,
                    "expires_at": out["results"]["expires_at"]})


@bp.get("/files/download/<token>")
def download(token: str):
    """Stream a result file for a valid signed link (no API key: the link is the grant)."""
    cfg = current_app.config
    record = artifacts.resolve(db_session(), cfg["SECRET_KEY"], token,
                               cfg["BATCHROUTER_ARTIFACT_URL_TTL"])
    stream = runtime().storage.open(record.storage_key)
    response = Response(iter(lambda: stream.read(1 << 16), b""), mimetype="application/jsonl")
    response.call_on_close(stream.close)
    response.headers["Content-Disposition"] = f'attachment; filename="{record.filename}"'
    response.headers["Content-Length"] = str(record.bytes)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/batches/<batch_id>/receipt")
@require("read")
def receipt(batch_id: str):
    """The route receipt: every attempt of every item (paged by `cursor`)."""
    cursor = request.args.get("cursor", "-1")
    if not cursor.lstrip("-").isdigit():
        raise InvalidRequest("cursor is the next_cursor of the previous page.",
                             code="invalid_cursor")
    return jsonify(finalize.route_receipt(db_session(), _batch(batch_id), after=int(cursor),
                                          limit=_limit(100, 1000)))


@bp.get("/batches/<batch_id>/billing-receipt")
@require("read")
def billing_receipt(batch_id: str):
    """Quoted vs settled, subtotal, fee, lanes, and the optimization report."""
    return jsonify(finalize.billing_receipt(db_session(), _batch(batch_id)))


@bp.post("/batches/<batch_id>/items/<path:customer_item_id>/feedback")
@require("submit")
def item_feedback(batch_id: str, customer_item_id: str):
    """Rate an item's result (score 1–5, optional label and note); feeds quality routing."""
    batch = _batch(batch_id)
    data = json_body()
    session = db_session()
    row = feedback.record(session, batch, customer_item_id, data.get("score"),
                          label=data.get("label"), note=data.get("note"),
                          user_id=current_principal().user_id)
    session.commit()
    return jsonify(feedback.to_json(row)), 201


