"""The provider interface (DESIGN §1): submit a work unit, poll it, cancel it.

Two flavours share it. Sync fan-out providers answer `submit` with every item's result.
Native-batch providers answer with a handle; `poll` returns the results once the provider
batch is done. Both return normalized `ItemResult`s so everything after dispatch (retries,
fallback, settlement, artifacts) is provider-agnostic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import msgspec

TRANSIENT_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class ItemRequest:
    """One item as a provider call: OpenAI-shaped body, whatever the manifest shape was."""

    item_id: str
    customer_item_id: str
    operation: str  # responses | embeddings | vision
    url: str  # /v1/chat/completions | /v1/responses | /v1/embeddings
    body: dict
    attempt: int = 1  # this item's attempt number across lanes
    # The batch's provider preferences, for routers that take them (OpenRouter's `provider`).
    routing: dict | None = None


@dataclass
class ItemResult:
    item_id: str
    ok: bool
    output: dict | None = None  # text / tool_calls / embedding / finish_reason
    usage: dict = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0})
    response: dict | None = None  # the provider's native response body
    provider_request_id: str | None = None
    # Cost the provider reported (micro-dollars), when it reports one (OpenRouter does).
    reported_cost_micros: int | None = None
    error: dict | None = None  # {code, message, provider?, status_code?, retryable}
    latency_ms: int = 0
    served_by: str | None = None  # the upstream that served it (OpenRouter's `provider`)


@dataclass
class Submission:
    """What `submit` returns: results now (sync) or a handle to poll (native batch)."""

    handle: dict | None = None
    results: list[ItemResult] | None = None


@dataclass
class Poll:
    status: str  # running | done | failed | expired
    results: list[ItemResult] | None = None
    progress: dict | None = None


class Provider(Protocol):
    slug: str

    def submit(self, model: str, mode: str, requests: list[ItemRequest], *,
               tag: str | None = None, resume_since: float | None = None) -> Submission:
        """`tag` names the work unit on the provider side; with `resume_since` (a unix time)
        a native submit first adopts provider batches it already created for that tag, so a
        crash between submit and commit never leaves an orphan batch running twice."""

    def poll(self, handle: dict) -> Poll: ...

    def cancel(self, handle: dict) -> None: ...


def error(code: str, message: str, *, retryable: bool, provider: str | None = None,
          status_code: int | None = None, retry_after: float | None = None) -> dict:
    """A structured item error (SPEC §5); `retry_after` is the provider's hint in seconds."""
    body = {"code": code, "message": message, "retryable": retryable}
    if provider:
        body["provider"] = provider
    if status_code is not None:
        body["status_code"] = status_code
    if retry_after:
        body["retry_after"] = round(retry_after, 3)
    return body


_LINE = msgspec.json.Decoder()


def build_request(item_id: str, line: bytes, attempt: int = 1) -> ItemRequest:
    """Turn a stored manifest line (native or OpenAI shape) into an OpenAI-shaped request."""
    data = _LINE.decode(line.lstrip(b"\xef\xbb\xbf"))
    if "custom_id" in data or "url" in data:
        url = data["url"]
        body = dict(data["body"])
        operation = "embeddings" if url == "/v1/embeddings" else "responses"
        return ItemRequest(item_id, data["custom_id"], operation, url, body, attempt)
    operation = data["operation"]
    body = dict(data["input"])
    if operation == "embeddings":
        return ItemRequest(item_id, data["customer_item_id"], operation, "/v1/embeddings", body,
                           attempt)
    if "max_output_tokens" in body:
        body["max_tokens"] = body.pop("max_output_tokens")
    return ItemRequest(item_id, data["customer_item_id"], operation, "/v1/chat/completions",
                       body, attempt)
