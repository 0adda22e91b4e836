"""The OpenAI-compatible Files + Batches API under /openai/v1 (SPEC §6): the official `openai`
SDK pointed here with a BatchRouter key works unchanged. Headers only OpenAI knows
(OpenAI-Organization, OpenAI-Project, X-Stainless-*) are ignored; errors use OpenAI's envelope
(api/openai_errors.py)."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from batchrouter import files, openai_batches, openai_format, quotes
from batchrouter.api.auth import current_principal, require
from batchrouter.api.idempotent import idempotent
from batchrouter.api.v1 import json_body
from batchrouter.errors import InvalidRequest
from batchrouter.extensions import db_session, manifest_limits, quote_settings, runtime

bp = Blueprint("openai_api", __name__, url_prefix="/openai/v1")

LIST_PURPOSES = {"batch": ("batch",), "batch_output": openai_format.OUTPUT_PURPOSES}


def _limit(default: int, cap: int) -> int:
    raw = request.args.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= cap:
        raise InvalidRequest(f"limit must be between 1 and {cap}.", code="invalid_limit",
                             details={"param": "limit"})
    return int(raw)


def _workspace() -> str:
    return current_principal().workspace_id


# --- files -----------------------------------------------------------------------------------

@bp.post("/files")
@require("submit")
@idempotent
def upload_file():
    """Upload a .jsonl batch input (multipart: file, purpose=batch); validated as stored."""
    upload = request.files.get("file")
    if upload is None:
        raise InvalidRequest("Send the file as the multipart field 'file'.",
                             code="missing_required", details={"param": "file"})
    purpose = request.form.get("purpose")
    if purpose != "batch":
        raise InvalidRequest("purpose must be 'batch' (the only purpose this service "
                             "accepts).", code="invalid_purpose", details={"param": "purpose"})
    filename = upload.filename or ""
    if not filename.lower().endswith(".jsonl"):
        raise InvalidRequest("Invalid file format for Batch API. Must be .jsonl.",
                             code="invalid_file_format", details={"param": "file"})
    principal = current_principal()
    session = db_session()
    record, _report = files.store_manifest(
        session, runtime().storage, workspace_id=principal.workspace_id, mode=principal.mode,
        stream=upload.stream, filename=filename, purpose=purpose,
        models=quotes.model_operations(session), limits=manifest_limits())
    session.commit()
    return jsonify(openai_format.file_object(record))


@bp.get("/files")
@require("read")
def list_files():
    """Uploads and OpenAI-format result files, newest first (`after`, `limit`, `order`,
    `purpose`)."""
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be asc or desc.", code="invalid_order",
                             details={"param": "order"})
    purpose = request.args.get("purpose")
    purposes = LIST_PURPOSES.get(purpose, ()) if purpose else \
        ("batch",) + openai_format.OUTPUT_PURPOSES
    limit = _limit(10_000, 10_000)
    rows = files.list_files(db_session(), _workspace(), purposes=purposes,
                            after=request.args.get("after"), order=order, limit=limit + 1)
    return jsonify(openai_format.page([openai_format.file_object(r) for r in rows[:limit]],
                                      len(rows) > limit))


@bp.get("/files/<file_id>")
@require("read")
def get_file(file_id: str):
    """One file's metadata."""
    return jsonify(openai_format.file_object(files.get_file(db_session(), _workspace(),
                                                            file_id)))


@bp.delete("/files/<file_id>")
@require("submit")
def delete_file(file_id: str):
    """Delete a file (batches made from it keep running)."""
    session = db_session()
    record = files.get_file(session, _workspace(), file_id)
    files.delete_file(session, runtime().storage, record)
    session.commit()
    return jsonify(openai_format.deleted_file(record.id))


@bp.get("/files/<file_id>/content")
@require("read")
def file_content(file_id: str):
    """The file's bytes (input, output or error JSONL)."""
    record = files.get_file(db_session(), _workspace(), file_id)
    stream = runtime().storage.open(record.storage_key)
    response = Response(iter(lambda: stream.read(1 << 16), b""),
                        mimetype="application/octet-stream")
    response.call_on_close(stream.close)
    response.headers["Content-Length"] = str(record.bytes)
    response.headers["Content-Disposition"] = f'attachment; filename="{record.filename}"'
    return response


# --- batches ---------------------------------------------------------------------------------

@bp.post("/batches")
@require("submit")
@idempotent
def create_batch():
    """Quote the file (controls from metadata), reserve, and start the batch."""
    principal = current_principal()
    session = db_session()
    retries = request.headers.get("x-stainless-retry-count", "0")
    row = openai_batches.create(session, runtime().storage, quote_settings(),
                                workspace_id=principal.workspace_id, mode=principal.mode,
                                key_id=principal.key_id, body=json_body(),
                                retry=retries.isdigit() and int(retries) > 0)
    row, batch = openai_batches.get(session, principal.workspace_id, row.id)
    return jsonify(openai_format.batch_object(row, batch))


@bp.get("/batches")
@require("read")
def list_batches():
    """Newest first; `after` is the last id of the previous page."""
    rows, has_more = openai_batches.list_page(db_session(), _workspace(),
                                              after=request.args.get("after"),
                                              limit=_limit(20, 100))
    return jsonify(openai_format.page([openai_format.batch_object(r, b) for r, b in rows],
                                      has_more))


@bp.get("/batches/<batch_id>")
@require("read")
def get_batch(batch_id: str):
    """Poll a batch."""
    return jsonify(openai_format.batch_object(*openai_batches.get(db_session(), _workspace(),
                                                                  batch_id)))


@bp.post("/batches/<batch_id>/cancel")
@require("cancel")
def cancel_batch(batch_id: str):
    """Cancel: status `cancelling`, then `cancelled` with what finished in the output file."""
    row, batch = openai_batches.cancel(db_session(), _workspace(), batch_id)
    return jsonify(openai_format.batch_object(row, batch))
