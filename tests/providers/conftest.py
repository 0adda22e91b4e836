"""Fixtures: loopback OpenAI / Anthropic / OpenRouter fakes and an app configured to use them
through the environment keys of SPEC §12."""
from __future__ import annotations

import pytest

from tests.factories import make_key, make_user, workspace_of
from tests.providers.fakes import FakeAnthropic, FakeOpenAI

FAST = {"BATCHROUTER_POLL_INTERVAL": 0.0, "BATCHROUTER_RETRY_BASE_DELAY": 0.0,
        "BATCHROUTER_PROVIDER_TIMEOUT": 2.0, "BATCHROUTER_BREAKER_MIN_CALLS": 10_000}


@pytest.fixture
def fakes():
    made = {"openai": FakeOpenAI(), "anthropic": FakeAnthropic(), "openrouter": FakeOpenAI()}
    made["openrouter"].cost = 0.000123
    made["openrouter"].served_by = "Groq"
    yield made
    for fake in made.values():
        fake.stop()


@pytest.fixture
def app_overrides(request, tmp_path, fakes):
    return {"BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage"),
            "OPENAI_API_KEY": "sk-test-openai", "OPENAI_BASE_URL": fakes["openai"].url + "/v1",
            "ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": fakes["anthropic"].url,
            "OPENROUTER_API_KEY": "sk-or-test",
            "OPENROUTER_BASE_URL": fakes["openrouter"].url + "/v1",
            **FAST, **getattr(request, "param", {})}


@pytest.fixture
def owner(session, seeded_catalog):
    user = make_user(session)
    _key, secret = make_key(session, user)
    return workspace_of(session, user), secret


def chat(cid: str, model: str, text: str = "Hello there", **extra) -> dict:
    return {"customer_item_id": cid, "operation": "responses", "model": model,
            "input": {"messages": [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": text}],
                      "max_output_tokens": 50, **extra}}
