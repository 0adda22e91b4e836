"""Loopback fakes of OpenAI, Anthropic and OpenRouter that speak their wire formats
(../shared/reference/provider-wire-formats.md) on a StubServer, driven through the real SDKs.

Each fake answers sync calls deterministically and keeps native batches in memory. Knobs:
`fail_next` (a list of canned answers played before normal service: (status, body, headers),
RESET, or a callable returning one — e.g. after sleeping past the client's timeout), `batch_script` (how provider batches progress), `latency`.
"""
from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime

from tests.stubs import RESET, StubServer

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}{next(_ids):06d}"


def _prompt(body: dict) -> str:
    if "messages" in body:
        parts = []
        for m in body["messages"]:
            c = m.get("content")
            parts.append(c if isinstance(c, str) else " ".join(
                p.get("text", "") for p in c or [] if isinstance(p, dict)))
        return " ".join(parts)
    value = body.get("input", "")
    return value if isinstance(value, str) else json.dumps(value)


def _multipart_file(rec) -> bytes:
    """The `file` part of a multipart upload."""
    boundary = rec.headers["content-type"].split("boundary=", 1)[1].strip('"').encode()
    for part in rec.body.split(b"--" + boundary):
        if b'name="file"' in part:
            return part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
    raise AssertionError("no file part")


class Fake:
    """Common knobs: canned failures first, then normal answers."""

    def __init__(self):
        self.stub = StubServer()
        self.fail_next: list = []
        self.latency = 0.0
        self.calls = 0
        self.setup()
        self.stub.start()
        self.url = self.stub.url

    def canned(self):
        self.calls += 1
        if self.latency:
            time.sleep(self.latency)
        if self.fail_next:
            answer = self.fail_next.pop(0)
            return answer() if callable(answer) else answer
        return None

    def stop(self):
        self.stub.stop()


class FakeOpenAI(Fake):
    """OpenAI (and OpenAI-compatible / OpenRouter) chat, responses, embeddings, files, batches.

    batch_script: list of (status, completed_fraction) a batch walks through, one per poll;
    the last entry repeats. `expire_keep`: on `expired`, how many lines reach the output."""

    def setup(self):
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        self.batch_script = [("in_progress", 0.0), ("completed", 1.0)]
        self.expire_keep = 0
        self.line_errors: dict[str, tuple] = {}  # custom_id -> (status, message)
        self.cost = None  # OpenRouter: usage.cost per call
        self.served_by = None
        s = self.stub
        s.route("POST", "/v1/chat/completions", self.chat)
        s.route("POST", "/v1/responses", self.responses)
        s.route("POST", "/v1/embeddings", self.embeddings)
        s.route("GET", "/v1/models", lambda r: (200, {"object": "list", "data": [
            {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "fake"}]}))
        s.route("POST", "/v1/files", self.upload)
        s.route("GET", "/v1/files/*", self.file_content)
        s.route("POST", "/v1/batches", self.create_batch)
        s.route("GET", "/v1/batches", self.list_batches)
        s.route("GET", "/v1/batches/*", self.get_batch)
        s.route("POST", "/v1/batches/*", self.cancel_batch)

    # --- sync ---
    def chat_body(self, body: dict) -> dict:
        text = f"answer to {_prompt(body)[:60]}"
        prompt_tokens = max(1, len(_prompt(body)) // 4)
        out = {"id": _id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
               "model": body["model"],
               "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text}}],
               "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 7,
                         "total_tokens": prompt_tokens + 7}}
        if body.get("tools"):
            out["choices"][0]["finish_reason"] = "tool_calls"
            out["choices"][0]["message"]["tool_calls"] = [{
                "id": "call_1", "type": "function",
                "function": {"name": body["tools"][0]["function"]["name"],
                             "arguments": '{"city": "Paris"}'}}]
        if self.cost is not None:
            out["usage"]["cost"] = self.cost
        if self.served_by:
            out["provider"] = self.served_by
        return out

    def chat(self, rec):
        return self.canned() or (200, self.chat_body(rec.json))

    def responses(self, rec):
        body = rec.json
        return self.canned() or (200, {
            "id": _id("resp_"), "object": "response", "status": "completed",
            "model": body["model"],
            "output": [{"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": f"response to {_prompt(body)[:40]}"}]}],
            "usage": {"input_tokens": 11, "output_tokens": 5, "total_tokens": 16}})

    def embedding_body(self, body: dict) -> dict:
        return {"object": "list", "model": body["model"],
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                "usage": {"prompt_tokens": 3, "total_tokens": 3}}

    def embeddings(self, rec):
        return self.canned() or (200, self.embedding_body(rec.json))

    # --- files + batches ---
    def upload(self, rec):
        data = _multipart_file(rec)
        fid = _id("file-")
        self.files[fid] = data
        return 200, {"id": fid, "object": "file", "bytes": len(data), "created_at": 0,
                     "filename": "in.jsonl", "purpose": "batch", "status": "processed"}

    def file_content(self, rec):
        fid = rec.path.split("/")[3]
        if rec.path.endswith("/content"):
            return 200, self.files[fid], {"Content-Type": "application/octet-stream"}
        return 200, {"id": fid, "object": "file", "bytes": len(self.files[fid]),
                     "created_at": 0, "filename": "x.jsonl", "purpose": "batch",
                     "status": "processed"}

    def create_batch(self, rec):
        body = rec.json
        lines = [json.loads(x) for x in self.files[body["input_file_id"]].splitlines() if x]
        bid = _id("batch_")
        self.batches[bid] = {
            "id": bid, "object": "batch", "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"], "completion_window": "24h",
            "status": "validating", "created_at": int(time.time()),
            "metadata": body.get("metadata"), "output_file_id": None, "error_file_id": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "_lines": lines}
        self.polls[bid] = 0
        return 200, self.public(self.batches[bid])

    def public(self, b: dict) -> dict:
        return {k: v for k, v in b.items() if not k.startswith("_")}

    def list_batches(self, rec):
        data = [self.public(b) for b in sorted(self.batches.values(),
                                                key=lambda b: b["id"], reverse=True)]
        return 200, {"object": "list", "data": data, "has_more": False,
                     "first_id": data[0]["id"] if data else None,
                     "last_id": data[-1]["id"] if data else None}

    def get_batch(self, rec):
        b = self.batches[rec.path.split("/")[3]]
        if b["status"] in ("completed", "expired", "failed", "cancelled"):
            return 200, self.public(b)
        step = self.batch_script[min(self.polls[b["id"]], len(self.batch_script) - 1)]
        self.polls[b["id"]] += 1
        status, fraction = step
        total = b["request_counts"]["total"]
        b["request_counts"]["completed"] = int(total * fraction)
        b["status"] = status
        if status in ("completed", "expired"):
            self.finish(b, total if status == "completed" else self.expire_keep)
        return 200, self.public(b)

    def cancel_batch(self, rec):
        b = self.batches[rec.path.split("/")[3]]
        if b["status"] not in ("completed", "expired", "failed", "cancelled"):
            b["status"] = "cancelled"
            self.finish(b, 0)
        return 200, self.public(b)

    def finish(self, b: dict, keep: int):
        out, errors = [], []
        for i, line in enumerate(b["_lines"]):
            cid = line["custom_id"]
            if i >= keep:
                code = "batch_expired" if b["status"] == "expired" else "batch_cancelled"
                errors.append({"id": _id("batch_req_"), "custom_id": cid, "response": None,
                               "error": {"code": code, "message": "not processed"}})
            elif cid in self.line_errors:
                status, message = self.line_errors[cid]
                errors.append({"id": _id("batch_req_"), "custom_id": cid, "error": None,
                               "response": {"status_code": status, "request_id": _id("req_"),
                                            "body": {"error": {"message": message,
                                                               "type": "invalid_request_error"}}}})
            else:
                out.append({"id": _id("batch_req_"), "custom_id": cid, "error": None,
                            "response": {"status_code": 200, "request_id": _id("req_"),
                                         "body": self.embedding_body(line["body"])
                                         if line["url"] == "/v1/embeddings"
                                         else self.chat_body(line["body"])}})
        out.reverse()  # output order is not input order
        for name, rows in (("output_file_id", out), ("error_file_id", errors)):
            if rows:
                fid = _id("file-")
                self.files[fid] = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
                b[name] = fid
        b["request_counts"]["completed"] = len(out)
        b["request_counts"]["failed"] = len(errors) if b["status"] == "completed" else 0


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class FakeAnthropic(Fake):
    """Anthropic Messages and Message Batches. batch_script: processing statuses per poll."""

    def setup(self):
        self.batches: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        self.batch_script = ["in_progress", "ended"]
        self.expire_after = None  # on end, requests from this index on are `expired`
        self.errored: dict[str, str] = {}  # custom_id -> error type
        s = self.stub
        s.route("POST", "/v1/messages", self.message)
        s.route("GET", "/v1/models", lambda r: (200, {"data": [
            {"id": "claude-haiku", "type": "model", "display_name": "Haiku",
             "created_at": _rfc3339(0)}], "has_more": False, "first_id": "claude-haiku",
            "last_id": "claude-haiku"}))
        s.route("POST", "/v1/messages/batches", self.create_batch)
        s.route("GET", "/v1/messages/batches", self.list_batches)
        s.route("GET", "/v1/messages/batches/*", self.get_batch)
        s.route("POST", "/v1/messages/batches/*", self.cancel_batch)

    def message_body(self, params: dict) -> dict:
        assert params.get("max_tokens"), "max_tokens is required"
        assert all(m["role"] in ("user", "assistant") for m in params["messages"])
        content = [{"type": "text", "text": f"claude says: {_prompt(params)[:60]}"}]
        stop = "end_turn"
        if params.get("tools"):
            content.append({"type": "tool_use", "id": "toolu_1",
                            "name": params["tools"][0]["name"], "input": {"city": "Paris"}})
            stop = "tool_use"
        return {"id": _id("msg_"), "type": "message", "role": "assistant",
                "model": params["model"], "content": content, "stop_reason": stop,
                "stop_sequence": None,
                "usage": {"input_tokens": max(1, len(_prompt(params)) // 4),
                          "output_tokens": 9, "cache_read_input_tokens": 0}}

    def message(self, rec):
        return self.canned() or (200, self.message_body(rec.json))

    def _state(self, b: dict) -> dict:
        return {k: v for k, v in b.items() if not k.startswith("_")}

    def create_batch(self, rec):
        requests = rec.json["requests"]
        bid = _id("msgbatch_")
        now = time.time()
        self.batches[bid] = {
            "id": bid, "type": "message_batch", "processing_status": "in_progress",
            "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0,
                               "canceled": 0, "expired": 0},
            "created_at": _rfc3339(now), "expires_at": _rfc3339(now + 86400),
            "ended_at": None, "cancel_initiated_at": None, "archived_at": None,
            "results_url": None, "_requests": requests}
        self.polls[bid] = 0
        return 200, self._state(self.batches[bid])

    def list_batches(self, rec):
        data = [self._state(b) for b in sorted(self.batches.values(), key=lambda b: b["id"],
                                               reverse=True)]
        return 200, {"data": data, "has_more": False,
                     "first_id": data[0]["id"] if data else None,
                     "last_id": data[-1]["id"] if data else None}

    def get_batch(self, rec):
        parts = rec.path.split("/")
        b = self.batches[parts[4]]
        if len(parts) > 5 and parts[5] == "results":
            return 200, b"".join(json.dumps(r).encode() + b"\n" for r in b["_results"]), \
                {"Content-Type": "application/x-jsonl"}
        if b["processing_status"] != "ended":
            status = self.batch_script[min(self.polls[b["id"]], len(self.batch_script) - 1)]
            self.polls[b["id"]] += 1
            if status == "ended":
                self.end(b)
        return 200, self._state(b)

    def cancel_batch(self, rec):
        b = self.batches[rec.path.split("/")[4]]
        b["cancel_initiated_at"] = _rfc3339(time.time())
        if b["processing_status"] != "ended":
            self.end(b, cancel=True)
        return 200, self._state(b)

    def end(self, b: dict, cancel: bool = False):
        results, counts = [], {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0,
                               "expired": 0}
        for i, r in enumerate(b["_requests"]):
            cid = r["custom_id"]
            if cancel:
                result = {"type": "canceled"}
            elif self.expire_after is not None and i >= self.expire_after:
                result = {"type": "expired"}
            elif cid in self.errored:
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": self.errored[cid], "message": "bad"}}}
            else:
                result = {"type": "succeeded", "message": self.message_body(r["params"])}
            counts[{"succeeded": "succeeded", "errored": "errored", "canceled": "canceled",
                    "expired": "expired"}[result["type"]]] += 1
            results.append({"custom_id": cid, "result": result})
        # A transient error hits one attempt; an invalid request fails every time.
        self.errored = {k: v for k, v in self.errored.items() if v == "invalid_request_error"}
        b.update(processing_status="ended", request_counts=counts, ended_at=_rfc3339(time.time()),
                 results_url=f"{self.url}/v1/messages/batches/{b['id']}/results",
                 _results=list(reversed(results)))


def custom_ids(fake: FakeOpenAI) -> list[str]:
    return [line["custom_id"] for b in fake.batches.values() for line in b["_lines"]]


__all__ = ["RESET", "FakeAnthropic", "FakeOpenAI", "custom_ids"]
