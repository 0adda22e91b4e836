"""A script written for OpenAI's Batch API, run unchanged (but for base_url and api_key) against
BatchRouter with real RQ workers on the sandbox provider (SPEC §6)."""
from __future__ import annotations

import time

import pytest
from openai import OpenAI

from batchrouter import catalog
from tests.conftest import WorkerProcess, subprocess_env
from tests.openai_compat.conftest import chat_line, embed_line, parse_jsonl, upload


@pytest.fixture
def running_worker(live_server):
    worker = WorkerProcess(subprocess_env(live_server.app)).start()
    yield worker
    worker.kill(15)


def wait_until_done(client: OpenAI, batch_id: str, timeout: float = 60):
    """What OpenAI's cookbook does: poll retrieve until the batch is terminal."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        seen.append(batch.status)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch, seen
        time.sleep(0.2)
    raise AssertionError(f"batch still {seen[-1]} after {timeout}s")


@pytest.mark.pg
def test_upload_create_poll_download_parse(client, tenant, running_worker):
    lines = [chat_line(i) for i in range(6)]
    uploaded = upload(client, lines)
    assert uploaded.object == "file" and uploaded.purpose == "batch"
    assert uploaded.status == "processed" and uploaded.bytes > 0

    created = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                    completion_window="24h",
                                    metadata={"description": "nightly eval job"})
    assert created.status == "validating" and created.object == "batch"
    assert created.endpoint == "/v1/chat/completions" and created.completion_window == "24h"
    assert created.input_file_id == uploaded.id
    assert created.metadata["description"] == "nightly eval job"
    assert created.request_counts.total == 6
    assert created.expires_at - created.created_at == 24 * 3600

    batch, seen = wait_until_done(client, created.id)
    assert batch.status == "completed", seen
    assert set(seen) <= {"validating", "in_progress", "finalizing", "completed"}
    assert batch.request_counts.completed == 6 and batch.request_counts.failed == 0
    assert batch.error_file_id is None and batch.errors is None
    assert batch.created_at <= batch.in_progress_at <= batch.finalizing_at <= batch.completed_at
    assert batch.model == "sandbox-chat"
    assert batch.usage.input_tokens > 0 and batch.usage.output_tokens > 0
    assert batch.usage.total_tokens == batch.usage.input_tokens + batch.usage.output_tokens
    # Our extras ride along without replacing OpenAI's fields.
    assert batch.metadata["batchrouter_quote_id"].startswith("qlock_")
    assert batch.batchrouter["status"] == "completed"
    assert batch.batchrouter["cost_usd"]["settled"] == batch.metadata["batchrouter_cost_usd"]

    output = client.files.retrieve(batch.output_file_id)
    assert output.purpose == "batch_output" and output.status == "processed"
    results = parse_jsonl(client.files.content(batch.output_file_id).text)
    assert [r["custom_id"] for r in results] == [f"req-{i}" for i in range(6)]
    tokens_in = tokens_out = 0
    for result in results:
        assert result["id"].startswith("batch_req_") and result["error"] is None
        assert result["response"]["status_code"] == 200
        assert result["response"]["request_id"].startswith("sandbox_req_")
        body = result["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert "sandbox output" in body["choices"][0]["message"]["content"]
        assert body["usage"]["total_tokens"] == \
            body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        tokens_in += body["usage"]["prompt_tokens"]
        tokens_out += body["usage"]["completion_tokens"]
        assert result["batchrouter"]["provider"] == "sandbox"
        assert result["batchrouter"]["cost_usd"]
    assert (tokens_in, tokens_out) == (batch.usage.input_tokens, batch.usage.output_tokens)


def test_mixed_models_and_responses_endpoint(client, tenant, live_server, worker):
    """Several models in one file are allowed (unlike OpenAI) and split internally; the
    /v1/responses endpoint gets Response-shaped bodies."""
    with live_server.app.extensions["batchrouter"].db.session() as s:
        doc = catalog.export_document(s)
        doc["models"] = [dict(m, slug="sandbox-chat-large", name="Sandbox chat large")
                         for m in doc["models"] if m["slug"] == "sandbox-chat"]
        doc["offerings"] = [dict(o, model="sandbox-chat-large",
                                 provider_model_id="sandbox-chat-large")
                            for o in doc["offerings"] if o["model"] == "sandbox-chat"]
        catalog.apply_document(s, doc, overwrite=False)
    lines = [dict(chat_line(i, model=("sandbox-chat", "sandbox-chat-large")[i % 2]),
                  url="/v1/responses") for i in range(4)]
    for line in lines:
        body = line["body"]
        body["input"] = body.pop("messages")[0]["content"]
        body["max_output_tokens"] = body.pop("max_tokens")
    created = client.batches.create(input_file_id=upload(client, lines).id,
                                    endpoint="/v1/responses", completion_window="24h")
    assert created.model is None  # two models
    worker()
    batch = client.batches.retrieve(created.id)
    assert batch.status == "completed" and batch.request_counts.completed == 4
    results = {r["custom_id"]: r for r in parse_jsonl(
        client.files.content(batch.output_file_id).text)}
    for i in range(4):
        body = results[f"req-{i}"]["response"]["body"]
        assert body["object"] == "response" and body["status"] == "completed"
        assert body["model"] == ("sandbox-chat", "sandbox-chat-large")[i % 2]
        assert body["output"][0]["content"][0]["type"] == "output_text"
        assert body["usage"]["total_tokens"] > 0
    lanes = {r["batchrouter"]["lane"] for r in results.values()}
    assert {lane.split("/")[1] for lane in lanes} == {"sandbox-chat", "sandbox-chat-large"}


def test_embeddings_endpoint(client, tenant, worker):
    created = client.batches.create(input_file_id=upload(client, [embed_line(i) for i in
                                                                  range(3)]).id,
                                    endpoint="/v1/embeddings", completion_window="24h")
    worker()
    batch = client.batches.retrieve(created.id)
    assert batch.status == "completed" and batch.model == "sandbox-embed"
    results = parse_jsonl(client.files.content(batch.output_file_id).text)
    assert len(results) == 3
    for result in results:
        body = result["response"]["body"]
        assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
        assert len(body["data"][0]["embedding"]) == 16
        assert body["usage"]["prompt_tokens"] > 0


def test_the_documented_script_runs_unchanged(live_server, tenant, running_worker,
                                              tmp_path, monkeypatch, capsys):
    """docs/openai-compatibility.md's copy-paste script, with only base_url and api_key (and
    its polling pause) changed."""
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "openai-compatibility.md").read_text()
    script = doc.split("## A complete script", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    script = (script.replace("http://127.0.0.1:8000/openai/v1", live_server.url + "/openai/v1")
              .replace('api_key="br_live_…"', f'api_key="{tenant[1]}"')
              .replace("time.sleep(5)", "time.sleep(0.2)"))
    monkeypatch.chdir(tmp_path)
    # The documented example, run as written (placeholders filled in): the docs cannot rot.
    exec(compile(script, "openai-compatibility.md", "exec"), {"__name__": "__doc__"})  # noqa: S102
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("completed ")
    answers = [line for line in printed[1:] if line.startswith("q-")]
    assert len(answers) == 10 and all("sandbox output" in a for a in answers)
