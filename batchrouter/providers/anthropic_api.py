"""Anthropic lanes through the official `anthropic` SDK: Messages (sync) and Message Batches.

Items arrive OpenAI-shaped; `to_messages` translates them into a Messages request and
`from_message` turns the answer back into the normalized result (text, tool calls, usage,
stop reason). Message Batches carry no metadata, so a resubmission after a crash adopts a
batch created since the unit recorded its intent with exactly the shard's request count.
"""
from __future__ import annotations

import base64
import json
import time

import anthropic

from batchrouter.providers import classify, fanout, wire
from batchrouter.providers.base import ItemRequest, ItemResult, Poll, Submission, error
from batchrouter.providers.openai_api import http_client

DEFAULT_MAX_TOKENS = 4096
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                "tool_use": "tool_calls", "refusal": "content_filter",
                "model_context_window_exceeded": "length", "pause_turn": "stop"}


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def _image(url: str) -> dict:
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media = head[5:].split(";")[0] or "image/png"
        base64.b64decode(data, validate=True)  # a bad data URL is the caller's error
        return {"type": "image", "source": {"type": "base64", "media_type": media,
                                            "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content) -> list | str:
    if isinstance(content, str):
        return content
    blocks = []
    for part in content or []:
        kind = part.get("type")
        if kind in ("text", "input_text"):
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind in ("image_url", "input_image"):
            url = part["image_url"]["url"] if isinstance(part.get("image_url"), dict) \
                else part.get("image_url") or part.get("url")
            blocks.append(_image(url))
    return blocks


def _message(m: dict) -> dict:
    role = m.get("role")
    if role == "tool":
        return {"role": "user", "content": [{"type": "tool_result",
                                             "tool_use_id": m.get("tool_call_id"),
                                             "content": _text(m.get("content"))}]}
    if role == "assistant" and m.get("tool_calls"):
        blocks = [{"type": "text", "text": _text(m["content"])}] if m.get("content") else []
        for call in m["tool_calls"]:
            fn = call.get("function", {})
            blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                           "input": json.loads(fn.get("arguments") or "{}")})
        return {"role": "assistant", "content": blocks}
    return {"role": "assistant" if role == "assistant" else "user",
            "content": _blocks(m.get("content"))}


def _tool_choice(choice) -> dict | None:
    if choice in (None, "auto"):
        return None if choice is None else {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    return {"type": "tool", "name": choice.get("function", {}).get("name")}


def to_messages(model: str, request: ItemRequest) -> dict:
    """An OpenAI chat / responses body as an Anthropic Messages request."""
    body = request.body
    if request.url == "/v1/embeddings":
        raise ValueError("Anthropic has no embeddings endpoint")
    messages = body.get("messages")
    if messages is None:  # the responses shape: `input` plus `instructions`
        value = body.get("input", "")
        messages = [{"role": "user", "content": value}] if isinstance(value, str) else value
    system = [_text(m.get("content")) for m in messages if m.get("role") in ("system",
                                                                             "developer")]
    if body.get("instructions"):
        system.insert(0, body["instructions"])
    params = {"model": model, "messages": [_message(m) for m in messages
                                           if m.get("role") not in ("system", "developer")],
              "max_tokens": body.get("max_tokens") or body.get("max_completion_tokens")
              or body.get("max_output_tokens") or DEFAULT_MAX_TOKENS}
    if system:
        params["system"] = "\n\n".join(system)
    if body.get("temperature") is not None:
        params["temperature"] = min(1.0, float(body["temperature"]))
    if body.get("top_p") is not None:
        params["top_p"] = body["top_p"]
    if body.get("stop"):
        params["stop_sequences"] = [body["stop"]] if isinstance(body["stop"], str) \
            else list(body["stop"])
    if body.get("tools"):
        params["tools"] = [{"name": t["function"]["name"],
                            "description": t["function"].get("description", ""),
                            "input_schema": t["function"].get("parameters")
                            or {"type": "object", "properties": {}}}
                           for t in body["tools"] if t.get("type") == "function"]
        choice = _tool_choice(body.get("tool_choice"))
        if choice:
            params["tool_choice"] = choice
    return params


def from_message(item_id: str, message: dict, latency_ms: int = 0) -> ItemResult:
    """A Messages response as the normalized result."""
    blocks = message["content"]
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    calls = [{"id": b["id"], "type": "function",
              "function": {"name": b["name"], "arguments": json.dumps(b.get("input", {}))}}
             for b in blocks if b.get("type") == "tool_use"]
    output = {"text": text, "finish_reason": STOP_REASONS.get(message.get("stop_reason"),
                                                              "stop")}
    if calls:
        output["tool_calls"] = calls
    usage = message.get("usage") or {}
    tokens_in = sum(int(usage.get(k) or 0) for k in ("input_tokens",
                                                     "cache_creation_input_tokens",
                                                     "cache_read_input_tokens"))
    return ItemResult(item_id, True, output=output,
                      usage={"input_tokens": tokens_in,
                             "output_tokens": int(usage.get("output_tokens") or 0)},
                      response=message, provider_request_id=message.get("id"),
                      latency_ms=latency_ms)


class AnthropicProvider(fanout.SyncFanout):
    def __init__(self, slug: str, base_url: str, api_key: str | None, *, concurrency: int = 64,
                 timeout: float = 60.0, max_batch_items: int = 100_000,
                 max_batch_bytes: int = 256 * 1024 * 1024, transport: str = "httpx"):
        self.slug, self.base_url, self.api_key = slug, base_url.rstrip("/"), api_key or "none"
        self.concurrency, self.timeout, self.transport = concurrency, timeout, transport
        self.max_batch_items = max_batch_items or 100_000
        self.max_batch_bytes = max_batch_bytes or 256 * 1024 * 1024

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key=self.api_key, base_url=self.base_url, max_retries=0,
                                   timeout=self.timeout)

    def submit(self, model: str, mode: str, requests: list[ItemRequest], *,
               tag: str | None = None, resume_since: float | None = None) -> Submission:
        if mode == "batch":
            return Submission(handle=self._submit_batch(model, requests, resume_since))
        return Submission(results=fanout.run(self._sync_all(model, requests)))

    def _async_client(self):
        if self.transport == "wire":
            return wire.WireClient(self.base_url, wire.anthropic_headers(self.api_key),
                                   self.concurrency, self.timeout)
        return anthropic.AsyncAnthropic(
            api_key=self.api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout,
            http_client=http_client(anthropic, self.concurrency, self.timeout, self.transport))

    def _client_key(self) -> tuple:
        return ("anthropic", self.base_url, self.api_key, self.timeout, self.transport,
                self.concurrency)

    async def _call(self, client, model: str, request: ItemRequest) -> ItemResult:
        started = time.monotonic()
        try:
            params = to_messages(model, request)
        except (ValueError, KeyError, TypeError) as exc:
            return ItemResult(request.item_id, False, error=error(
                "invalid_request", f"Cannot express this item as a Messages request: {exc}",
                retryable=False, provider=self.slug))
        try:
            message = await client.post("/v1/messages", body=params, cast_to=object)
            return from_message(request.item_id, message,
                                int((time.monotonic() - started) * 1000))
        except Exception as exc:  # noqa: BLE001 - every outcome becomes a classified result
            return ItemResult(request.item_id, False, error=classify.from_exception(self.slug, exc),
                              latency_ms=int((time.monotonic() - started) * 1000))

    def check(self) -> str:
        page = self.client().models.list()
        return f"{len(page.data)} models visible"

    # --- Message Batches -----------------------------------------------------------------

    def shards(self, model: str, requests: list[ItemRequest]) -> list[list[dict]]:
        ids = [r.item_id for r in requests]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate custom_id in a provider batch")
        out, current, size = [], [], 0
        for r in requests:
            entry = {"custom_id": r.item_id, "params": to_messages(model, r)}
            length = len(json.dumps(entry))
            if current and (len(current) >= self.max_batch_items
                            or size + length > self.max_batch_bytes):
                out.append(current)
                current, size = [], 0
            current.append(entry)
            size += length
        if current:
            out.append(current)
        return out

    def _recent(self, client, since: float) -> list:
        """Batches created since `since` (oldest first): candidates to adopt on resume."""
        found = []
        for b in client.messages.batches.list(limit=100):
            if b.created_at.timestamp() < since - 5:
                break
            found.append(b)
        return sorted(found, key=lambda b: b.created_at)

    def _submit_batch(self, model: str, requests: list[ItemRequest],
                      resume_since: float | None) -> dict:
        client = self.client()
        candidates = self._recent(client, resume_since) if resume_since is not None else []
        batches = []
        for shard in self.shards(model, requests):
            match = [b for b in candidates if _total(b) == len(shard)]
            if len(match) == 1:  # unambiguous: this unit's own earlier submit
                candidates.remove(match[0])
                batches.append({"id": match[0].id, "count": len(shard)})
                continue
            created = client.messages.batches.create(requests=shard)
            batches.append({"id": created.id, "count": len(shard)})
        return {"kind": "anthropic", "batches": batches, "model": model}

    def poll(self, handle: dict) -> Poll:
        client = self.client()
        states = [client.messages.batches.retrieve(b["id"]) for b in handle["batches"]]
        total = sum(b["count"] for b in handle["batches"])
        progress = {"total": total,
                    "completed": total - sum(s.request_counts.processing for s in states),
                    "statuses": sorted({s.processing_status for s in states})}
        if any(s.processing_status != "ended" for s in states):
            return Poll("running", progress=progress)
        results = []
        for state in states:
            results += [self._line(r) for r in client.messages.batches.results(state.id)]
        expired = any(s.request_counts.expired for s in states)
        cancelled = all(s.cancel_initiated_at for s in states)
        return Poll("expired" if expired else "cancelled" if cancelled else "done",
                    results=results, progress=progress)

    def _line(self, line) -> ItemResult:
        result = line.result
        if result.type == "succeeded":
            return from_message(line.custom_id, result.message.model_dump(mode="json"))
        if result.type == "errored":
            err = result.error.error if hasattr(result.error, "error") else result.error
            kind = getattr(err, "type", "api_error")
            message = getattr(err, "message", kind)
            return ItemResult(line.custom_id, False, error=classify.from_batch_line_error(
                self.slug, {"code": kind, "message": message}))
        return ItemResult(line.custom_id, False, error=classify.from_batch_line_error(
            self.slug, {"code": result.type, "message": f"The request was {result.type}."}))

    def cancel(self, handle: dict) -> None:
        client = self.client()
        for b in handle.get("batches", []):
            try:
                client.messages.batches.cancel(b["id"])
            except anthropic.APIStatusError:
                pass


def _total(batch) -> int:
    c = batch.request_counts
    return c.processing + c.succeeded + c.errored + c.canceled + c.expired
