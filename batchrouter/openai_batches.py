"""Batches through the OpenAI-compatible surface (SPEC §6): create (implicit quote, reservation,
the normal pipeline), read, list, cancel.

A create takes the quote itself from the uploaded file with routing controls read from
`metadata`, then accepts it like POST /v1/batches does. Input that does not validate gives a
batch recorded as `failed` with line-numbered `errors` and nothing reserved, as OpenAI does.

The SDK retries a POST after a timeout without an idempotency header, so creates are
de-duplicated on (workspace, request body): a repeat within DEDUPE_WINDOW — or within
RETRY_WINDOW when the SDK says it is a retry — returns the first batch instead of a second.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import timedelta

import msgspec
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from batchrouter import batches, files, ledger, openai_format, quotes
from batchrouter.db import utcnow
from batchrouter.errors import Conflict, InvalidRequest, NotFound, ValidationFailed
from batchrouter.ids import new_id
from batchrouter.models import Batch, File, OpenAIBatch

DEDUPE_WINDOW = timedelta(minutes=10)
RETRY_WINDOW = timedelta(hours=24)
CLAIM_WAIT = 30.0  # how long a repeat waits for the first request to finish creating
MAX_ERRORS = 1000
# Metadata keys that are routing controls (SPEC §6); every pair is also kept as metadata.
CONTROL_KEYS = ("routing_mode", "sla_tier", "privacy_tier", "max_price", "allowed_regions")


@dataclass(frozen=True)
class CreateRequest:
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict


def _param_error(message: str, param: str, code: str = "invalid_request") -> InvalidRequest:
    return InvalidRequest(message, code=code, details={"param": param})


def parse_create(body: dict) -> CreateRequest:
    """The create body, validated field by field (errors name the offending `param`)."""
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise _param_error("input_file_id is required.", "input_file_id", "missing_required")
    endpoint = body.get("endpoint")
    if endpoint not in openai_format.ENDPOINTS:
        raise _param_error(f"endpoint must be one of {', '.join(openai_format.ENDPOINTS)}.",
                           "endpoint", "invalid_endpoint")
    window = body.get("completion_window")
    if window not in openai_format.COMPLETION_WINDOWS:
        raise _param_error("completion_window must be '24h' (choose a slower or faster tier "
                           "with metadata.sla_tier).", "completion_window",
                           "invalid_completion_window")
    metadata = body.get("metadata") or {}
    try:
        metadata = batches._clean_metadata(metadata)
    except ValidationFailed as exc:
        raise _param_error(exc.message, "metadata", "invalid_metadata") from exc
    return CreateRequest(file_id, endpoint, window, metadata)


def controls_from_metadata(metadata: dict):
    """Routing controls carried as metadata strings (`max_price` is a USD amount, e.g. "12.50";
    `allowed_regions` is comma separated)."""
    data = {k: metadata[k] for k in ("routing_mode", "sla_tier", "privacy_tier") if k in metadata}
    if "max_price" in metadata:
        data["max_price"] = {"currency": "usd", "amount": metadata["max_price"]}
    if "allowed_regions" in metadata:
        data["allowed_regions"] = [r.strip() for r in metadata["allowed_regions"].split(",")
                                   if r.strip()]
    try:
        return quotes.parse_controls(data)
    except ValidationFailed as exc:
        field = (exc.details or {}).get("field", "")
        raise _param_error(exc.message, f"metadata.{field}".rstrip("."),
                           "invalid_metadata") from exc


def input_file(session: Session, workspace_id: str, file_id: str) -> File:
    record = files.get_file(session, workspace_id, file_id)
    if record.purpose != "batch":
        raise _param_error("input_file_id must be a file uploaded with purpose 'batch'.",
                           "input_file_id", "invalid_input_file")
    return record


def fingerprint(workspace_id: str, body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{workspace_id}\n{canonical}".encode()).hexdigest()


# --- create ----------------------------------------------------------------------------------

def claim(session: Session, *, workspace_id: str, mode: str, request: CreateRequest,
          digest: str, key_id: str | None, retry: bool) -> tuple[OpenAIBatch, bool]:
    """The batch an identical recent create already made, or a new row claimed for this one.

    The workspace lock makes look-up and insert one step, so two racing repeats cannot both
    miss the first."""
    session.commit()
    ledger.lock_workspace(session, workspace_id)
    since = utcnow() - (RETRY_WINDOW if retry else DEDUPE_WINDOW)
    existing = session.scalars(select(OpenAIBatch).where(
        OpenAIBatch.workspace_id == workspace_id, OpenAIBatch.fingerprint == digest,
        OpenAIBatch.created_at >= since).order_by(OpenAIBatch.id.desc()).limit(1)).first()
    if existing is not None:
        session.commit()
        return existing, False
    row = OpenAIBatch(id=new_id("bat"), workspace_id=workspace_id, mode=mode, state="creating",
                      endpoint=request.endpoint, completion_window=request.completion_window,
                      input_file_id=request.input_file_id, metadata_=request.metadata,
                      fingerprint=digest, created_by_key_id=key_id, created_at=utcnow())
    session.add(row)
    session.commit()
    return row, True


def await_created(session: Session, row_id: str, timeout: float = CLAIM_WAIT) -> OpenAIBatch:
    """A repeat of a create still running: wait (holding no transaction) for its outcome."""
    deadline = time.monotonic() + timeout
    while True:
        session.rollback()
        row = session.get(OpenAIBatch, row_id, populate_existing=True)
        if row is None:
            raise Conflict("The first attempt of this request failed; send it again.",
                           code="create_retry", headers={"Retry-After": "1",
                                                         "x-should-retry": "true"})
        if row.state != "creating":
            return row
        if time.monotonic() >= deadline:
            raise Conflict("An identical create request is still being processed.",
                           code="create_in_progress",
                           headers={"Retry-After": "2", "x-should-retry": "true"})
        time.sleep(0.2)


def create(session: Session, storage, settings: quotes.Settings, *, workspace_id: str,
           mode: str, key_id: str | None, body: dict, retry: bool = False) -> OpenAIBatch:
    """Create (or find the identical earlier) OpenAI-style batch; returns its row, committed."""
    request = parse_create(body)
    controls = controls_from_metadata(request.metadata)
    input_file(session, workspace_id, request.input_file_id)
    row, fresh = claim(session, workspace_id=workspace_id, mode=mode, request=request,
                       digest=fingerprint(workspace_id, body), key_id=key_id, retry=retry)
    if not fresh:
        return await_created(session, row.id)
    try:
        _build(session, storage, settings, row, controls, key_id)
    except Exception:
        # Nothing was created: free the fingerprint so the corrected request can run.
        session.rollback()
        session.execute(delete(OpenAIBatch).where(OpenAIBatch.id == row.id))
        session.commit()
        raise
    session.commit()
    return row


def _build(session: Session, storage, settings: quotes.Settings, row: OpenAIBatch,
           controls, key_id: str | None) -> None:
    record = input_file(session, row.workspace_id, row.input_file_id)
    if record.status != "processed":
        return _fail(row, [dict(e, param=None) for e in record.preflight_errors])
    source = batches.file_lines(session, storage, row.workspace_id, record.id)
    mismatched = endpoint_mismatches(source.lines, row.endpoint)
    if mismatched:
        return _fail(row, mismatched)
    report = quotes.file_report(session, storage, row.workspace_id, record.id)
    try:
        quote = quotes.create_quote(session, settings, workspace_id=row.workspace_id,
                                    mode=row.mode, report=report, controls=controls,
                                    input_file_id=record.id)
    except quotes.QuoteRejected as exc:
        if exc.code != "no_eligible_lane":
            raise
        session.rollback()
        return _fail(row, unroutable_errors(exc.details or {}))
    batch = batches.create_batch(session, quote=quote, source=source, metadata=row.metadata_,
                                 key_id=key_id, batch_id=row.id)
    models = {lane["model"] for lane in quote.lanes if lane["selected_items"]}
    row.batch_id, row.state = batch.id, "created"
    row.model = models.pop() if len(models) == 1 else None


def _fail(row: OpenAIBatch, errors: list[dict]) -> None:
    row.state, row.failed_at = "failed", utcnow()
    row.errors = errors[:MAX_ERRORS]


class _UrlOnly(msgspec.Struct):
    url: object = None
    custom_id: object = None


_URL = msgspec.json.Decoder(_UrlOnly)


def endpoint_mismatches(lines: list[bytes], endpoint: str) -> list[dict]:
    """OpenAI requires every line's url to be the batch's endpoint; one error per line."""
    errors = []
    for number, raw in enumerate(lines, start=1):
        line = _URL.decode(raw.lstrip(b"\xef\xbb\xbf"))
        if line.url == endpoint:
            continue
        message = (f"The request's url {line.url!r} does not match the batch endpoint "
                   f"{endpoint!r}." if line.custom_id is not None else
                   "This line is not an OpenAI batch request (custom_id, method, url, body).")
        errors.append({"code": "mismatched_endpoint", "line": number, "message": message,
                       "param": "url"})
        if len(errors) >= MAX_ERRORS:
            break
    return errors


def unroutable_errors(details: dict) -> list[dict]:
    """A quote's no_eligible_lane details as per-line batch errors."""
    out = []
    for item in details.get("items", []):
        reasons = "; ".join(f"{lane['lane']}: {lane['reason']}" for lane in item["lanes"])
        out.append({"code": "no_eligible_lane", "line": item["line"], "param": "body.model",
                    "message": f"No provider can run this request under the batch's routing "
                               f"controls ({reasons or 'no lane offers this model'})."})
    return out


# --- read, list, cancel ----------------------------------------------------------------------

def get(session: Session, workspace_id: str, batch_id: str) -> tuple[OpenAIBatch, Batch | None]:
    row = session.get(OpenAIBatch, batch_id) if isinstance(batch_id, str) else None
    if row is None or row.workspace_id != workspace_id:
        raise NotFound(f"No batch {str(batch_id)[:60]!r} in this workspace.",
                       code="batch_not_found", details={"param": "batch_id"})
    return row, session.get(Batch, row.batch_id) if row.batch_id else None


def list_page(session: Session, workspace_id: str, *, after: str | None,
              limit: int) -> tuple[list[tuple[OpenAIBatch, Batch | None]], bool]:
    """Newest first, keyset-paged by id; one query for the rows and their batches."""
    stmt = (select(OpenAIBatch, Batch).outerjoin(Batch, Batch.id == OpenAIBatch.batch_id)
            .where(OpenAIBatch.workspace_id == workspace_id))
    if after:
        stmt = stmt.where(OpenAIBatch.id < after)
    rows = session.execute(stmt.order_by(OpenAIBatch.id.desc()).limit(limit + 1)).all()
    return [(r[0], r[1]) for r in rows[:limit]], len(rows) > limit


def cancel(session: Session, workspace_id: str, batch_id: str):
    """Cancel through the normal path: dispatch stops, finished lines are still delivered."""
    row, batch = get(session, workspace_id, batch_id)
    if batch is None:
        raise Conflict(f"The batch is {openai_format.status_of(row, None)} and cannot be "
                       "cancelled.", code="batch_terminal")
    batches.request_cancel(session, batch)
    session.commit()
    return row, batch

