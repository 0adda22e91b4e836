"""Public catalog endpoints (SPEC §4, §6): GET /v1/catalog/models and /v1/catalog/providers."""
from __future__ import annotations

import pytest

from batchrouter import catalog

MODELS = "/v1/catalog/models"
PROVIDERS = "/v1/catalog/providers"


def models(client, **params) -> list[dict]:
    response = client.get(MODELS, query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert body["object"] == "list"
    return body["data"]


def test_catalog_is_public_and_seeded_with_a_useful_set(client, seeded_catalog):
    response = client.get(MODELS)  # no API key
    assert response.status_code == 200
    body = response.get_json()
    assert body["prices_taken_at"] == catalog.load_document()["prices_taken_at"]
    data = body["data"]
    assert len(data) >= 12
    slugs = {m["id"] for m in data}
    assert {"gpt-4o-mini", "claude-sonnet-4-5", "sandbox-chat", "sandbox-embed"} <= slugs
    assert any(m["operations"] == ["embeddings"] for m in data)
    multi = [m["id"] for m in data if len({o["provider"] for o in m["offerings"]}) > 1]
    assert len(multi) >= 3, multi
    for m in data:
        assert m["object"] == "model" and m["context_window"] > 0
        for o in m["offerings"]:
            assert o["lane"] == f"{o['provider']}/{m['id']}/{o['mode']}"
            assert o["mode"] in ("batch", "sync")
            assert isinstance(o["input_per_mtok"], str) and "." in o["input_per_mtok"]
            assert 0 <= o["quality_prior"] <= 1 and 0 <= o["health"] <= 1
            assert o["turnaround_p90_s"] >= o["turnaround_p50_s"] > 0


def test_real_list_prices_are_shown(client, seeded_catalog):
    gpt4o = next(m for m in models(client) if m["id"] == "gpt-4o")
    lanes = {o["lane"]: o for o in gpt4o["offerings"]}
    assert lanes["openai/gpt-4o/batch"]["input_per_mtok"] == "2.500000"
    assert lanes["openai/gpt-4o/batch"]["output_per_mtok"] == "10.000000"
    assert lanes["openai/gpt-4o/batch"]["batch_discount"] == "0.500000"
    assert lanes["openai/gpt-4o/sync"]["batch_discount"] == "0.000000"


def test_filter_by_operation(client, seeded_catalog):
    embeddings = models(client, operation="embeddings")
    assert {m["id"] for m in embeddings} == {"text-embedding-3-small", "text-embedding-3-large",
                                             "sandbox-embed"}
    vision = models(client, operation="vision")
    assert vision and all("vision" in m["operations"] for m in vision)
    assert "claude-3-5-haiku" not in {m["id"] for m in vision}
    assert models(client, operation="teleport") == []


def test_filter_by_provider(client, seeded_catalog):
    data = models(client, provider="openrouter")
    assert {"gpt-4o", "llama-3.1-8b-instruct", "deepseek-chat-v3"} <= {m["id"] for m in data}
    assert "text-embedding-3-small" not in {m["id"] for m in data}
    for m in data:
        assert m["offerings"] and {o["provider"] for o in m["offerings"]} == {"openrouter"}
    sandbox = models(client, provider="sandbox")
    assert {m["id"] for m in sandbox} == {"sandbox-chat", "sandbox-embed"}


def test_filter_by_feature(client, seeded_catalog):
    data = models(client, feature="vision")
    ids = {m["id"] for m in data}
    assert "gpt-4o" in ids and "sandbox-chat" in ids
    assert "llama-3.3-70b-instruct" not in ids and "text-embedding-3-small" not in ids
    for m in data:
        assert all("vision" in o["features"] for o in m["offerings"])
    # llama-3.1-8b offers tools but not structured output
    assert "llama-3.1-8b-instruct" not in {m["id"] for m in models(client,
                                                                    feature="structured_output")}


def test_filters_combine(client, seeded_catalog):
    data = models(client, operation="responses", provider="anthropic", feature="vision")
    assert {m["id"] for m in data} == {"claude-sonnet-4-5", "claude-haiku-4-5",
                                       "claude-opus-4-1"}


def test_providers_without_credentials(client, seeded_catalog):
    response = client.get(PROVIDERS)
    assert response.status_code == 200
    providers = {p["id"]: p for p in response.get_json()["data"]}
    assert set(providers) == {"openai", "anthropic", "openrouter", "sandbox"}
    assert providers["openai"]["configured"] is False
    assert providers["anthropic"]["configured"] is False
    assert providers["sandbox"]["configured"] is True
    assert providers["sandbox"]["health"] == 1.0 and providers["sandbox"]["breaker_open"] is False
    # Offerings carry the same flag.
    gpt = next(m for m in models(client) if m["id"] == "gpt-4o-mini")
    assert all(o["provider_configured"] is False for o in gpt["offerings"])


@pytest.mark.parametrize("app_overrides", [{"OPENAI_API_KEY": "sk-test"}], indirect=True)
def test_providers_with_an_openai_key(client, seeded_catalog):
    providers = {p["id"]: p for p in client.get(PROVIDERS).get_json()["data"]}
    assert providers["openai"]["configured"] is True
    assert providers["openrouter"]["configured"] is False
    assert providers["sandbox"]["configured"] is True
    gpt = next(m for m in models(client) if m["id"] == "gpt-4o-mini")
    flags = {o["provider"]: o["provider_configured"] for o in gpt["offerings"]}
    assert flags == {"openai": True, "openrouter": False}


@pytest.mark.parametrize("app_overrides", [{"OPENAI_API_KEY": "sk-test-SECRET123"}],
                         indirect=True)
def test_catalog_never_exposes_credentials(client, seeded_catalog):
    for path in (PROVIDERS, MODELS):
        text = client.get(path).get_data(as_text=True)
        assert "SECRET123" not in text


def test_providers_show_what_spec_lists(client, seeded_catalog):
    providers = {p["id"]: p for p in client.get(PROVIDERS).get_json()["data"]}
    openai = providers["openai"]
    assert openai["name"] == "OpenAI" and openai["adapter"] == "openai"
    assert "configured" in openai and "health" in openai
    assert openai["base_url"] == "https://api.openai.com/v1"
