"""OpenAI's object shapes for the OpenAI-compatible surface (SPEC §6): File and Batch objects,
the status mapping, and the output / error file lines.

Plain functions over rows: no Flask, no queries. Our own figures (quote, cost, receipts) ride
along as the extra field `batchrouter` and as `batchrouter_*` metadata keys, never in place of
one of OpenAI's fields, so code that parses OpenAI's shapes reads ours unchanged.
"""
from __future__ import annotations

import calendar
import time
from datetime import datetime

from batchrouter import money
from batchrouter.models import Batch, File, Item, OpenAIBatch

ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings")
COMPLETION_WINDOWS = ("24h",)

# Our batch status → OpenAI's. Our `failed` (nothing succeeded) is OpenAI's `completed` with
# every line in the error file; OpenAI's `failed` means the input did not validate.
STATUS = {"pending": "validating", "queued": "validating", "routing": "in_progress",
          "dispatched": "in_progress", "processing": "in_progress", "completing": "finalizing",
          "completed": "completed", "failed": "completed", "expired": "expired",
          "cancelling": "cancelling", "cancelled": "cancelled"}

# Stored purpose → OpenAI's. Our OpenAI-format artifacts are kept apart from the native ones
# (same batch, other line shape) so each surface lists only its own.
OUTPUT_PURPOSES = ("openai_output", "openai_errors")
WIRE_PURPOSE = {"batch": "batch", "openai_output": "batch_output",
                "openai_errors": "batch_output", "batch_output": "batch_output",
                "batch_errors": "batch_output"}


def epoch(value: datetime | None) -> int | None:
    """Unix seconds of a naive-UTC timestamp (OpenAI's timestamps are integers)."""
    return calendar.timegm(value.timetuple()) if value else None


# --- files -----------------------------------------------------------------------------------

def file_object(record: File) -> dict:
    """OpenAI's File object, with our preflight report as an extra field."""
    details = None
    if record.status == "error":
        first = (record.preflight_errors or [{}])[0]
        details = (f"{record.preflight_error_count} line(s) failed validation; first: line "
                   f"{first.get('line')}: {first.get('message')}")
    return {"id": record.id, "object": "file", "bytes": record.bytes,
            "created_at": epoch(record.created_at), "filename": record.filename,
            "purpose": WIRE_PURPOSE.get(record.purpose, record.purpose),
            "status": "error" if record.status == "error" else "processed",
            "status_details": details, "expires_at": None,
            "batchrouter": {"mode": record.mode, "sha256": record.sha256,
                            "item_count": record.item_count,
                            "preflight": {"ok": record.preflight_error_count == 0,
                                          "error_count": record.preflight_error_count,
                                          "errors": record.preflight_errors}}}


def deleted_file(file_id: str) -> dict:
    return {"id": file_id, "object": "file", "deleted": True}


def page(data: list[dict], has_more: bool) -> dict:
    """OpenAI's cursor list envelope."""
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


# --- batches ---------------------------------------------------------------------------------

def status_of(row: OpenAIBatch, batch: Batch | None) -> str:
    if batch is None:
        return "failed" if row.state == "failed" else "validating"
    return STATUS.get(batch.status, "in_progress")


def _timestamps(row: OpenAIBatch, batch: Batch | None, status: str) -> dict:
    out = {"in_progress_at": None, "finalizing_at": epoch(row.finalizing_at),
           "completed_at": None, "failed_at": epoch(row.failed_at), "expired_at": None,
           "cancelling_at": None, "cancelled_at": None,
           "expires_at": epoch(batch.sla_deadline) if batch else
           epoch(row.created_at) + 24 * 3600}
    if batch is None:
        return out
    if status not in ("validating", "failed"):
        out["in_progress_at"] = epoch(batch.started_at or batch.created_at)
    out["cancelling_at"] = epoch(batch.cancel_requested_at)
    finished = {"completed": "completed_at", "expired": "expired_at",
                "cancelled": "cancelled_at"}.get(status)
    if finished and batch.finished_at:
        out[finished] = epoch(batch.finished_at)
    return out


def _request_counts(batch: Batch | None) -> dict:
    if batch is None:
        return {"total": 0, "completed": 0, "failed": 0}
    # Cancelled and expired items are lines of the error file, so they count as failed.
    return {"total": batch.total, "completed": batch.succeeded,
            "failed": batch.failed + batch.cancelled + batch.expired}


def usage_object(input_tokens: int, output_tokens: int) -> dict:
    return {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens}


def _extras(row: OpenAIBatch, batch: Batch | None) -> dict:
    if batch is None:
        return {"batch_id": None, "status": "failed", "mode": row.mode, "quote_id": None}
    return {"batch_id": batch.id, "status": batch.status, "mode": batch.mode,
            "quote_id": batch.quote_id, "sla_tier": batch.controls["sla_tier"],
            "routing_mode": batch.controls["routing_mode"],
            "privacy_tier": batch.controls["privacy_tier"],
            "cost_usd": {"quoted_expected": money.to_wire(batch.quoted_expected_micros),
                         "quoted_high": money.to_wire(batch.quoted_high_micros),
                         "reserved": money.to_wire(batch.reserved_micros),
                         "settled": money.to_wire(batch.settled_micros)},
            "receipt_url": f"/v1/batches/{batch.id}/receipt",
            "billing_receipt_url": f"/v1/batches/{batch.id}/billing-receipt"}


def _metadata(row: OpenAIBatch, batch: Batch | None) -> dict:
    metadata = dict(row.metadata_ or {})
    if batch is not None:
        metadata.update({"batchrouter_quote_id": batch.quote_id,
                         "batchrouter_cost_usd": money.to_wire(batch.settled_micros),
                         "batchrouter_receipt": f"/v1/batches/{batch.id}/receipt"})
    return metadata


def batch_object(row: OpenAIBatch, batch: Batch | None) -> dict:
    """OpenAI's Batch object for one of our batches (or for a batch that failed validation)."""
    status = status_of(row, batch)
    usage = row.usage or {"input_tokens": 0, "output_tokens": 0}
    errors = None
    if row.errors:
        errors = {"object": "list", "data": [
            {"code": e.get("code"), "line": e.get("line"), "message": e.get("message"),
             "param": e.get("param")} for e in row.errors]}
    return {"id": row.id, "object": "batch", "endpoint": row.endpoint, "model": row.model,
            "errors": errors, "input_file_id": row.input_file_id,
            "completion_window": row.completion_window, "status": status,
            "output_file_id": row.output_file_id, "error_file_id": row.error_file_id,
            "created_at": epoch(batch.created_at if batch else row.created_at),
            **_timestamps(row, batch, status),
            "request_counts": _request_counts(batch),
            "usage": usage_object(usage["input_tokens"], usage["output_tokens"]),
            "metadata": _metadata(row, batch), "batchrouter": _extras(row, batch)}


# --- output and error file lines -------------------------------------------------------------

def request_line_id(item_id: str) -> str:
    return "batch_req_" + item_id.split("_", 1)[-1]


def _chat_body(model: str, output: dict, usage: dict, created: int, ref: str) -> dict:
    message = {"role": "assistant", "content": output.get("text"), "refusal": None}
    if output.get("tool_calls"):
        message["tool_calls"] = output["tool_calls"]
    tokens_in, tokens_out = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    return {"id": f"chatcmpl-{ref}", "object": "chat.completion", "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": output.get("finish_reason") or "stop"}],
            "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                      "total_tokens": tokens_in + tokens_out},
            "system_fingerprint": None}


def _responses_body(model: str, output: dict, usage: dict, created: int, ref: str) -> dict:
    items = []
    if output.get("text") is not None:
        items.append({"type": "message", "id": f"msg_{ref}", "status": "completed",
                      "role": "assistant",
                      "content": [{"type": "output_text", "text": output["text"],
                                   "annotations": []}]})
    for call in output.get("tool_calls") or []:
        function = call.get("function", {})
        items.append({"type": "function_call", "id": f"fc_{call.get('id', ref)}",
                      "call_id": call.get("id"), "name": function.get("name"),
                      "arguments": function.get("arguments", ""), "status": "completed"})
    truncated = output.get("finish_reason") == "length"
    return {"id": f"resp_{ref}", "object": "response", "created_at": created,
            "status": "incomplete" if truncated else "completed", "model": model,
            "output": items, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
            "usage": usage_object(usage.get("input_tokens", 0), usage.get("output_tokens", 0))}


def _embeddings_body(model: str, output: dict, usage: dict, created: int, ref: str) -> dict:
    vectors = output.get("embedding") or []
    if vectors and not isinstance(vectors[0], list):
        vectors = [vectors]
    tokens = usage.get("input_tokens", 0)
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": v}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


# What a provider's native body looks like when it already has the endpoint's shape.
NATIVE_OBJECT = {"/v1/chat/completions": "chat.completion", "/v1/responses": "response",
                 "/v1/embeddings": "list"}
BUILDERS = {"/v1/chat/completions": _chat_body, "/v1/responses": _responses_body,
            "/v1/embeddings": _embeddings_body}


def response_body(endpoint: str, result: dict, ref: str) -> dict:
    """The body OpenAI's endpoint would have answered: the provider's own body when it has that
    shape (an OpenAI-compatible provider answering the same endpoint), else built from our
    normalized output and usage (Anthropic, or a chat answer to a /v1/responses line)."""
    native = result.get("response")
    if isinstance(native, dict) and native.get("object") == NATIVE_OBJECT[endpoint] \
            and native.get("usage"):
        return native
    return BUILDERS[endpoint](result.get("model"), result.get("output") or {},
                              result.get("usage") or {}, int(time.time()), ref)


def _extras_line(item: Item, result: dict | None) -> dict:
    extra = {"item_id": item.id, "status": item.status, "attempts": item.attempts,
             "cost_usd": money.to_wire(item.charged_micros)}
    if result:
        extra.update({"model": result.get("model"), "provider": result.get("provider"),
                      "lane": result.get("lane"), "usage": result.get("usage")})
    return extra


def _request_id(item: Item) -> str | None:
    log = item.attempt_log or []
    return log[-1].get("provider_request_id") if log else None


def output_line(endpoint: str, item: Item, result: dict) -> dict:
    """A line of the output file: a request that succeeded."""
    return {"id": request_line_id(item.id), "custom_id": item.customer_item_id,
            "response": {"status_code": 200, "request_id": _request_id(item),
                         "body": response_body(endpoint, result,
                                                       item.id.split("_", 1)[-1])},
            "error": None, "batchrouter": _extras_line(item, result)}


def _error_type(status_code: int) -> str:
    return {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            429: "rate_limit_error"}.get(status_code, "invalid_request_error"
                                         if status_code < 500 else "server_error")


def error_line(item: Item) -> dict:
    """A line of the error file. A provider's HTTP refusal is a response with its status code
    (as OpenAI writes it); a request that never got an answer (cancelled, expired, timed
    out) has `response: null` and an `error`."""
    error = item.error or {"code": "unknown", "message": "No result."}
    status_code = error.get("status_code")
    line = {"id": request_line_id(item.id), "custom_id": item.customer_item_id,
            "response": None, "error": None, "batchrouter": _extras_line(item, None)}
    if item.status == "failed" and isinstance(status_code, int):
        line["response"] = {"status_code": status_code, "request_id": _request_id(item),
                            "body": {"error": {"message": error.get("message"),
                                               "type": _error_type(status_code),
                                               "param": None, "code": error.get("code")}}}
    else:
        code = {"cancelled": "batch_cancelled", "expired": "batch_expired"}.get(
            item.status, error.get("code"))
        line["error"] = {"code": code, "message": error.get("message")}
    line["batchrouter"]["error"] = error
    return line
