"""The built-in sandbox provider: deterministic, clearly labelled, free of network and keys.

Outputs say they are sandbox outputs; token counts are computed from the input. Latency and a
failure rate are configurable so demos and tests can exercise waiting, retries and fallback.
Batch-mode "provider batches" become ready `batch_delay` seconds after submission.
"""
from __future__ import annotations

import hashlib
import tempfile
import time
import uuid
from pathlib import Path

import msgspec

from batchrouter.providers.base import ItemRequest, ItemResult, Poll, Submission, error


def _tokens(text: str) -> int:
    return max(1, -(-len(text) // 4))


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _fails(customer_item_id: str, attempt_key: str, rate: float) -> bool:
    """Deterministic pseudo-random failure: the same item and attempt always behave alike."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{customer_item_id}:{attempt_key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < rate


class SandboxProvider:
    slug = "sandbox"

    def __init__(self, *, latency_ms: int = 0, failure_rate: float = 0.0,
                 batch_delay: float = 2.0, state_dir: str | None = None):
        self.latency_ms = latency_ms
        self.failure_rate = failure_rate
        self.batch_delay = batch_delay
        # Where "provider-side" batch results wait until ready (like a provider's output file).
        self.state_dir = Path(state_dir or tempfile.gettempdir()) / "sandbox-batches"

    def submit(self, model: str, mode: str, requests: list[ItemRequest], *,
               tag: str | None = None, resume_since: float | None = None) -> Submission:
        if mode == "batch":
            self.state_dir.mkdir(parents=True, exist_ok=True)
            if tag and resume_since is not None:
                adopted = self._find(tag)
                if adopted:
                    return Submission(handle=adopted)
            batch_id = f"sandbox_batch_{uuid.uuid4().hex[:16]}"
            results = [self.answer(model, r) for r in requests]
            (self.state_dir / f"{batch_id}.msgpack").write_bytes(msgspec.msgpack.encode(results))
            handle = {"id": batch_id, "model": model, "count": len(requests),
                      "ready_at": time.time() + self.batch_delay}
            if tag:  # like a provider batch's metadata: findable by the unit that made it
                (self.state_dir / f"tag-{tag}.json").write_bytes(msgspec.json.encode(handle))
            return Submission(handle=handle)
        return Submission(results=[self.answer(model, r) for r in requests])

    def poll(self, handle: dict) -> Poll:
        if time.time() < handle["ready_at"]:
            return Poll("running", progress={"total": handle["count"], "completed": 0})
        path = self.state_dir / f"{handle['id']}.msgpack"
        if not path.exists():
            return Poll("expired")  # the provider lost it: items retry or fall back
        results = msgspec.msgpack.decode(path.read_bytes(), type=list[ItemResult])
        return Poll("done", results=results)

    def _find(self, tag: str) -> dict | None:
        path = self.state_dir / f"tag-{tag}.json"
        return msgspec.json.decode(path.read_bytes()) if path.exists() else None

    def cancel(self, handle: dict) -> None:
        (self.state_dir / f"{handle['id']}.msgpack").unlink(missing_ok=True)

    def answer(self, model: str, request: ItemRequest) -> ItemResult:
        """The deterministic result of one request."""
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        request_id = f"sandbox_req_{uuid.uuid4().hex[:20]}"
        if _fails(request.customer_item_id, str(request.attempt), self.failure_rate):
            return ItemResult(request.item_id, False, provider_request_id=request_id,
                              error=error("provider_unavailable", "Sandbox simulated a 503.",
                                          retryable=True, provider="sandbox", status_code=503),
                              latency_ms=self.latency_ms)
        if request.operation == "embeddings":
            return self._embedding(model, request, request_id)
        return self._chat(model, request, request_id)

    def _chat(self, model: str, request: ItemRequest, request_id: str) -> ItemResult:
        messages = request.body.get("messages") or [{"content": request.body.get("input", "")}]
        prompt = " ".join(_text_of(m.get("content")) for m in messages)
        last = _text_of(messages[-1].get("content")) if messages else ""
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:12]
        text = f"[sandbox output, not a model] Reply to: {last[:80]!r} ({digest})"
        cap = request.body.get("max_tokens") or request.body.get("max_completion_tokens")
        out_tokens = _tokens(text)
        finish = "stop"
        if cap and out_tokens > cap:
            out_tokens, finish = cap, "length"
            text = text[: cap * 4]
        usage = {"input_tokens": _tokens(prompt) + 4 * len(messages), "output_tokens": out_tokens}
        response = {"id": f"chatcmpl-{request_id[-12:]}", "object": "chat.completion",
                    "model": model, "created": int(time.time()),
                    "choices": [{"index": 0, "finish_reason": finish,
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": usage["input_tokens"],
                              "completion_tokens": out_tokens,
                              "total_tokens": usage["input_tokens"] + out_tokens},
                    "system_fingerprint": "sandbox"}
        return ItemResult(request.item_id, True, output={"text": text, "finish_reason": finish},
                          usage=usage, response=response, provider_request_id=request_id,
                          latency_ms=self.latency_ms)

    def _embedding(self, model: str, request: ItemRequest, request_id: str) -> ItemResult:
        value = request.body.get("input")
        texts = value if isinstance(value, list) else [value]
        vectors = []
        for text in texts:
            digest = hashlib.sha256(str(text).encode()).digest()
            vectors.append([round(b / 255 - 0.5, 4) for b in digest[:16]])
        tokens = sum(_tokens(str(t)) for t in texts)
        response = {"object": "list", "model": model,
                    "data": [{"object": "embedding", "index": i, "embedding": v}
                             for i, v in enumerate(vectors)],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return ItemResult(request.item_id, True,
                          output={"embedding": vectors[0] if len(vectors) == 1 else vectors,
                                  "finish_reason": "stop"},
                          usage={"input_tokens": tokens, "output_tokens": 0},
                          response=response, provider_request_id=request_id,
                          latency_ms=self.latency_ms)
