"""Fixtures for the OpenAI-compatible surface: the official `openai` SDK pointed at a live
server, a seeded catalog, and helpers that write OpenAI batch input files."""
from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest
from openai import OpenAI

from batchrouter import catalog
from tests.factories import SETTINGS, make_key, make_user, workspace_of


@pytest.fixture
def app_overrides(tmp_path):
    return {"BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage"),
            "BATCHROUTER_SANDBOX_BATCH_DELAY": 0.0, "BATCHROUTER_POLL_INTERVAL": 0.0,
            "BATCHROUTER_SCHEDULER_TICK": 0.2}


@pytest.fixture
def tenant(live_server, session):
    """A workspace with starter credits and a live key; the catalog seeded."""
    catalog.seed(session)
    session.commit()
    user = make_user(session, "pipeline@example.com")
    _key, secret = make_key(session, user)
    return workspace_of(session, user), secret


def sdk(live_server, secret: str, **options) -> OpenAI:
    """The official client, changed only in base_url and api_key (plus OpenAI-only headers
    a real pipeline sends, which must be ignored)."""
    return OpenAI(base_url=live_server.url + "/openai/v1", api_key=secret,
                  organization="org-openai-only", project="proj_openai_only", **options)


@pytest.fixture
def client(live_server, tenant) -> OpenAI:
    return sdk(live_server, tenant[1], max_retries=0, timeout=30)


def chat_line(i: int, model: str = "sandbox-chat", prefix: str = "req", **body) -> dict:
    return {"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user",
                                                   "content": f"Question number {i}?"}],
                     "max_tokens": 200, **body}}


def embed_line(i: int) -> dict:
    return {"custom_id": f"emb-{i}", "method": "POST", "url": "/v1/embeddings",
            "body": {"model": "sandbox-embed", "input": f"Sentence number {i}."}}


def jsonl(lines: list[dict]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def upload(client: OpenAI, lines: list[dict], name: str = "requests.jsonl"):
    return client.files.create(file=(name, io.BytesIO(jsonl(lines))), purpose="batch")


def parse_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def poor_tenant(session):
    """A workspace with no credit at all."""
    user = make_user(session, "broke@example.com", settings=replace(SETTINGS, starter_credits=0))
    _key, secret = make_key(session, user)
    return workspace_of(session, user), secret
