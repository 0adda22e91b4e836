"""Item builders and API helpers shared by the tests in tests/quote."""
from __future__ import annotations

import json
import re

from tests.factories import bearer

QUOTE = "/v1/quotes/model"
QUOTE_ALIAS = "/v1/batches/quote"
MANIFESTS = "/v1/batches/input-manifests"
FILES = "/v1/files"
DECIMAL = re.compile(r"^\d+\.\d{6}$")


def chat(item_id: str, model: str = "sandbox-chat", content: str = "Hello there", **knobs) -> dict:
    """A native responses item."""
    return {"customer_item_id": item_id, "operation": "responses", "model": model,
            "input": {"messages": [{"role": "user", "content": content}], **knobs}}


def embed(item_id: str, model: str = "sandbox-embed", text="some text") -> dict:
    return {"customer_item_id": item_id, "operation": "embeddings", "model": model,
            "input": {"input": text}}


def openai_line(custom_id: str, model: str = "sandbox-chat", url: str = "/v1/chat/completions",
                method: str = "POST", **body) -> dict:
    body = {"model": model, **body}
    if url == "/v1/embeddings":
        body.setdefault("input", "embed me")
    else:
        body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return {"custom_id": custom_id, "method": method, "url": url, "body": body}


def jsonl(*items) -> bytes:
    return b"".join(json.dumps(i).encode() + b"\n" for i in items)


def quote(client, secret, items=None, path=QUOTE, **controls):
    body = dict(controls)
    if items is not None:
        body["items"] = items
    return client.post(path, headers=bearer(secret), json=body)


def upload_raw(client, secret, data: bytes, headers=None):
    return client.post(MANIFESTS, headers={**bearer(secret), **(headers or {})}, data=data,
                       content_type="application/x-ndjson")


def upload_multipart(client, secret, data: bytes, filename="manifest.jsonl", purpose="batch"):
    import io

    return client.post(FILES, headers=bearer(secret),
                       data={"purpose": purpose, "file": (io.BytesIO(data), filename)},
                       content_type="multipart/form-data")


def preflight_problems(response) -> list[dict]:
    """The details.preflight[] list of a 400 preflight_failed answer (asserting its frame)."""
    assert response.status_code == 400, response.get_data(as_text=True)[:800]
    error = response.get_json()["error"]
    assert error["code"] == "preflight_failed", error
    assert isinstance(error["message"], str) and error["message"]
    problems = error["details"]["preflight"]
    for p in problems:
        assert set(p) >= {"line", "customer_item_id", "code", "message"}, p
        assert isinstance(p["message"], str) and p["message"]
    return problems


def only_problem(response) -> dict:
    problems = preflight_problems(response)
    assert len(problems) == 1, problems
    return problems[0]


def file_problems(response) -> list[dict]:
    """An uploaded File's preflight errors, asserting it was stored with status error."""
    assert response.status_code == 201, response.get_data(as_text=True)[:800]
    body = response.get_json()
    assert body["object"] == "file"
    assert body["status"] == "error", body
    assert body["preflight"]["ok"] is False
    assert body["preflight"]["error_count"] >= len(body["preflight"]["errors"]) >= 1
    return body["preflight"]["errors"]


def create_quote(session, settings, *, workspace_id: str, items: list, controls,
                 mode: str = "live"):
    """quotes.create_quote on inline items, preflighted as the API does it.

    Accepts both signatures the module has had: `lines=` (preflight inside) and `report=`
    (preflight by the caller)."""
    import inspect

    from batchrouter import manifest, quotes

    lines = manifest.encode_items(items)
    if "report" in inspect.signature(quotes.create_quote).parameters:
        report = quotes.preflight(lines, quotes.model_operations(session), settings.limits)
        return quotes.create_quote(session, settings, workspace_id=workspace_id, mode=mode,
                                   report=report, controls=controls)
    return quotes.create_quote(session, settings, workspace_id=workspace_id, mode=mode,
                               lines=lines, controls=controls)
