"""OpenAI-shaped lanes through the official `openai` SDK: OpenAI itself, OpenRouter and any
OpenAI-compatible server (vLLM, Ollama, llama.cpp, Together, Groq …), each at its base URL.

Sync: the chunk's requests run concurrently (bounded per lane) on one async client — the SDK's,
or the thin `wire` client that sends the same requests for a fraction of the CPU; the SDK's
own retries are off because dispatch retries at one layer only. Native batch (OpenAI and
compatible servers with Files + Batches): one JSONL file per shard (provider item and byte
limits), `purpose=batch`, one model per provider batch, tagged with the work unit in the
batch metadata so a resubmission after a crash adopts the batch instead of creating another.
"""
from __future__ import annotations

import time

import openai
import orjson

from batchrouter.providers import classify, fanout, wire
from batchrouter.providers.base import ItemRequest, ItemResult, Poll, Submission, error

TAG_KEY = "batchrouter_unit"
# An OpenAI /v1/embeddings batch holds at most this many embedding inputs across all its
# requests (an array `input` counts each element), whatever its line count.
EMBEDDING_INPUTS = 50_000
DONE = {"completed", "expired", "failed", "cancelled"}


def http_client(sdk, concurrency: int, timeout: float, transport: str):
    """The async HTTP client for a lane: aiohttp carries far more concurrent requests per core
    than the default transport (../shared/reference/performance.md §8), and the default's pool
    must not cap concurrency below the lane's (httpx's 100 connections silently would). The
    wire format is the SDK's either way."""
    if transport == "aiohttp":
        return sdk.DefaultAioHttpClient(timeout=timeout)
    import httpx2

    return sdk.DefaultAsyncHttpxClient(timeout=timeout, limits=httpx2.Limits(
        max_connections=max(100, concurrency * 2),
        max_keepalive_connections=max(100, concurrency)))


def _chat_output(body: dict) -> tuple[dict, dict]:
    choice = body["choices"][0]
    message = choice.get("message") or {}
    output = {"text": message.get("content"), "finish_reason": choice.get("finish_reason")}
    if message.get("tool_calls"):
        output["tool_calls"] = message["tool_calls"]
    usage = body.get("usage") or {}
    return output, {"input_tokens": int(usage.get("prompt_tokens") or 0),
                    "output_tokens": int(usage.get("completion_tokens") or 0)}


def _responses_output(body: dict) -> tuple[dict, dict]:
    texts, calls = [], []
    for part in body.get("output") or []:
        if part.get("type") == "message":
            texts += [c.get("text", "") for c in part.get("content") or []
                      if c.get("type") == "output_text"]
        elif part.get("type") == "function_call":
            calls.append(part)
    finish = "stop" if body.get("status", "completed") == "completed" else "length"
    output = {"text": "".join(texts), "finish_reason": finish}
    if calls:
        output["tool_calls"] = calls
        output["finish_reason"] = "tool_calls"
    usage = body.get("usage") or {}
    return output, {"input_tokens": int(usage.get("input_tokens") or 0),
                    "output_tokens": int(usage.get("output_tokens") or 0)}


def _embedding_output(body: dict) -> tuple[dict, dict]:
    vectors = [d["embedding"] for d in sorted(body["data"], key=lambda d: d.get("index", 0))]
    usage = body.get("usage") or {}
    return ({"embedding": vectors[0] if len(vectors) == 1 else vectors, "finish_reason": "stop"},
            {"input_tokens": int(usage.get("prompt_tokens") or 0), "output_tokens": 0})


def normalize(slug: str, url: str, item_id: str, body: dict, latency_ms: int = 0) -> ItemResult:
    """A provider response body as an ItemResult; a body missing its parts is malformed."""
    if not isinstance(body, dict):
        raise TypeError("response body is not a JSON object")
    if url == "/v1/embeddings":
        output, usage = _embedding_output(body)
    elif url == "/v1/responses":
        output, usage = _responses_output(body)
    else:
        output, usage = _chat_output(body)
    cost = (body.get("usage") or {}).get("cost")
    return ItemResult(item_id, True, output=output, usage=usage, response=body,
                      provider_request_id=body.get("id"), latency_ms=latency_ms,
                      reported_cost_micros=None if cost is None else round(float(cost) * 1e6),
                      served_by=body.get("provider") if isinstance(body.get("provider"), str)
                      else None)


def embedding_inputs(request: ItemRequest) -> int:
    """Embedding inputs one request carries: each string (or token list) of an array input;
    a single string, or a single list of token ids, is one."""
    value = request.body.get("input")
    if isinstance(value, list) and value and isinstance(value[0], (str, list)):
        return len(value)
    return 1


class OpenAIProvider(fanout.SyncFanout):
    """`native_batch` is False for OpenRouter (no Files+Batches) and compatible servers that
    lack it; `routing` adds OpenRouter's `provider` preferences to each body."""

    def __init__(self, slug: str, base_url: str, api_key: str | None, *, native_batch: bool,
                 openrouter: bool = False, concurrency: int = 64, timeout: float = 60.0,
                 max_batch_items: int = 50_000, max_batch_bytes: int = 200 * 1024 * 1024,
                 transport: str = "httpx"):
        self.slug, self.base_url, self.api_key = slug, base_url.rstrip("/"), api_key or "none"
        self.native_batch, self.openrouter = native_batch, openrouter
        self.concurrency, self.timeout, self.transport = concurrency, timeout, transport
        self.max_batch_items = max_batch_items or 50_000
        self.max_batch_bytes = max_batch_bytes or 200 * 1024 * 1024

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(api_key=self.api_key, base_url=self.base_url, max_retries=0,
                             timeout=self.timeout)

    # --- sync ----------------------------------------------------------------------------

    def submit(self, model: str, mode: str, requests: list[ItemRequest], *,
               tag: str | None = None, resume_since: float | None = None) -> Submission:
        if mode == "batch":
            if not self.native_batch:
                raise LookupError(f"{self.slug} has no native batch API")
            return Submission(handle=self._submit_batch(model, requests, tag, resume_since))
        return Submission(results=fanout.run(self._sync_all(model, requests)))

    def _async_client(self):
        if self.transport == "wire":
            return wire.WireClient(self.base_url, wire.openai_headers(self.api_key),
                                   self.concurrency, self.timeout)
        return openai.AsyncOpenAI(api_key=self.api_key, base_url=self.base_url, max_retries=0,
                                  timeout=self.timeout, http_client=http_client(
                                      openai, self.concurrency, self.timeout, self.transport))

    def _client_key(self) -> tuple:
        return ("openai", self.base_url, self.api_key, self.timeout, self.transport,
                self.concurrency)

    def body_for(self, model: str, request: ItemRequest) -> dict:
        body = {**request.body, "model": model}
        if self.openrouter and request.routing:
            body["provider"] = {**request.routing, **(body.get("provider") or {})}
        return body

    async def _call(self, client, model: str, request: ItemRequest) -> ItemResult:
        started = time.monotonic()
        try:
            body = await client.post(request.url.removeprefix("/v1"),
                                     body=self.body_for(model, request), cast_to=object)
            elapsed = int((time.monotonic() - started) * 1000)
            return normalize(self.slug, request.url, request.item_id, body, elapsed)
        except Exception as exc:  # noqa: BLE001 - every outcome becomes a classified result
            return ItemResult(request.item_id, False, error=classify.from_exception(self.slug, exc),
                              latency_ms=int((time.monotonic() - started) * 1000))

    def check(self) -> str:
        """A cheap authenticated call for the console's "test connection"."""
        page = self.client().models.list()
        return f"{len(page.data)} models visible"

    # --- native batch --------------------------------------------------------------------

    def shards(self, model: str, requests: list[ItemRequest]) -> list[tuple[str, bytes, int]]:
        """(endpoint, JSONL bytes, count) per provider batch: one endpoint and model each,
        within the provider's item and byte limits; duplicate custom_ids never leave us."""
        ids = [r.item_id for r in requests]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate custom_id in a provider batch")
        out, by_url = [], {}
        for r in requests:
            by_url.setdefault(r.url, []).append(r)
        for url, group in by_url.items():
            lines, size, inputs = [], 0, 0
            for r in group:
                line = orjson.dumps({"custom_id": r.item_id, "method": "POST", "url": url,
                                     "body": self.body_for(model, r)}) + b"\n"
                carried = embedding_inputs(r) if url == "/v1/embeddings" else 0
                if lines and (len(lines) >= self.max_batch_items
                              or size + len(line) > self.max_batch_bytes
                              or inputs + carried > EMBEDDING_INPUTS):
                    out.append((url, b"".join(lines), len(lines)))
                    lines, size, inputs = [], 0, 0
                lines.append(line)
                size += len(line)
                inputs += carried
            if lines:
                out.append((url, b"".join(lines), len(lines)))
        return out

    def _existing(self, client, tag: str, since: float) -> dict[str, dict]:
        """Provider batches already created for this unit (by metadata tag), by shard."""
        found = {}
        for b in client.batches.list(limit=100):
            if b.created_at < since - 300:
                break  # newest first: older batches cannot be this unit's
            meta = b.metadata or {}
            if meta.get(TAG_KEY) == tag:
                found[meta.get("shard", "0")] = {"id": b.id, "endpoint": b.endpoint}
        return found

    def _submit_batch(self, model: str, requests: list[ItemRequest], tag: str | None,
                      resume_since: float | None) -> dict:
        client = self.client()
        existing = self._existing(client, tag, resume_since) \
            if tag and resume_since is not None else {}
        batches = []
        for index, (url, data, count) in enumerate(self.shards(model, requests)):
            if str(index) in existing:
                batches.append({**existing[str(index)], "count": count})
                continue
            f = client.files.create(file=(f"{tag or 'batch'}-{index}.jsonl", data),
                                    purpose="batch")
            b = client.batches.create(input_file_id=f.id, endpoint=url, completion_window="24h",
                                      metadata={TAG_KEY: tag or "", "shard": str(index)})
            batches.append({"id": b.id, "endpoint": url, "count": count, "file_id": f.id})
        return {"kind": "openai", "batches": batches, "model": model}

    def poll(self, handle: dict) -> Poll:
        client = self.client()
        states = [client.batches.retrieve(b["id"]) for b in handle["batches"]]
        done = sum((s.request_counts.completed + s.request_counts.failed)
                   if s.request_counts else 0 for s in states)
        progress = {"total": sum(b["count"] for b in handle["batches"]), "completed": done,
                    "statuses": sorted({s.status for s in states})}
        if any(s.status not in DONE for s in states):
            return Poll("running", progress=progress)
        results = []
        for state, shard in zip(states, handle["batches"]):
            results += self._read_results(client, state, shard["endpoint"])
        statuses = {s.status for s in states}
        status = "failed" if "failed" in statuses else "expired" if "expired" in statuses \
            else "cancelled" if statuses == {"cancelled"} else "done"
        return Poll(status, results=results, progress=progress)

    def _read_results(self, client, state, endpoint: str) -> list[ItemResult]:
        out = []
        for file_id in (state.output_file_id, state.error_file_id):
            if not file_id:
                continue
            for raw in client.files.content(file_id).read().splitlines():
                if raw.strip():
                    out.append(self._line(orjson.loads(raw), endpoint))
        return out

    def _line(self, line: dict, endpoint: str) -> ItemResult:
        item_id = line["custom_id"]
        response = line.get("response") or {}
        status = response.get("status_code")
        if status == 200:
            try:
                result = normalize(self.slug, endpoint, item_id, response.get("body"))
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                return ItemResult(item_id, False, error=error(
                    "malformed_response", f"Malformed batch output line: {exc}"[:300],
                    retryable=True, provider=self.slug))
            result.provider_request_id = response.get("request_id") or result.provider_request_id
            return result
        if status:
            body = response.get("body") or {}
            message = (body.get("error") or {}).get("message") or f"HTTP {status}"
            return ItemResult(item_id, False, error=classify.from_status(self.slug, status,
                                                                         message))
        return ItemResult(item_id, False, error=classify.from_batch_line_error(
            self.slug, line.get("error") or {}))

    def cancel(self, handle: dict) -> None:
        client = self.client()
        for b in handle.get("batches", []):
            try:
                client.batches.cancel(b["id"])
            except openai.APIStatusError:
                pass  # already terminal: nothing to stop
