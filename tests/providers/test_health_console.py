"""Breakers in dispatch, `allow_fallbacks: false`, the hybrid tail rule, health write-back, and
the operator's providers page (keys, test connection, compatible servers)."""
from __future__ import annotations

import pytest
from sqlalchemy import select, update

from batchrouter import health, provider_status, tail
from batchrouter.db import utcnow
from batchrouter.models import Batch, Offering, Provider, ProviderCredential
from tests.factories import bearer, get_csrf, login, make_user, read
from tests.lifecycle.helpers import quote, quote_and_create
from tests.lifecycle.support import drive, get_json, items_of
from tests.providers.conftest import chat

pytestmark = pytest.mark.pg
SYNC = "openai/gpt-4o-mini/sync"
OVERLOADED = (503, {"error": {"message": "Overloaded", "type": "server_error"}})


def breakers(app) -> health.Health:
    return health.Health(app.extensions["batchrouter"].redis, health.policy_from(app.config))


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_BREAKER_MIN_CALLS": 4,
                                            "BATCHROUTER_BREAKER_COOLDOWN": 600.0}],
                         indirect=True)
def test_a_503_storm_opens_the_lane_breaker_and_the_rest_falls_back(
        app, client, db, owner, worker, fakes):
    _ws, secret = owner
    fakes["openai"].fail_next = [OVERLOADED] * 50
    items = [chat(f"b-{i}", "gpt-4o-mini", f"Q{i}") for i in range(6)]
    _q, batch = quote_and_create(client, secret, items, sla_tier="priority")
    drive(db, worker, batch["id"], timeout=30)

    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert body["status"] == "completed" and body["counts"]["succeeded"] == 6
    assert breakers(app).state(SYNC) == "open"
    # No retry storm: the open breaker stopped calls; everything finished on OpenRouter.
    assert fakes["openai"].calls <= 12
    rows = get_json(client, secret, f"/v1/batches/{batch['id']}/receipt")["items"]
    assert {r["final_lane"] for r in rows} == {"openrouter/gpt-4o-mini/sync"}
    # Health write-back: the catalog now routes around the lane until it recovers.
    with db.session() as s:
        provider_status.write_back(s, breakers(app))
    lane = read(db, lambda s: s.scalars(select(Offering).where(
        Offering.provider_slug == "openai", Offering.model_slug == "gpt-4o-mini",
        Offering.mode == "sync")).one())
    assert lane.health == 0.0
    q = quote(client, secret, [chat("next", "gpt-4o-mini")], sla_tier="priority")
    rejected = {r["lane"]: r["code"] for r in q["quote_lanes"]["rejected"]}
    assert rejected[SYNC] == "provider_unhealthy"
    providers = get_json(client, secret, "/v1/catalog/providers")["data"]
    openai = next(p for p in providers if p["id"] == "openai")
    assert next(lane for lane in openai["lanes"] if lane["lane"] == SYNC)["breaker"] == "open"


def test_without_fallbacks_an_open_breaker_makes_items_wait_with_a_clear_reason(
        app, client, db, owner, worker, fakes):
    _ws, secret = owner
    breakers(app).force(SYNC, "open")
    _q, batch = quote_and_create(client, secret, [chat("w-1", "gpt-4o-mini")],
                                 sla_tier="priority",
                                 provider_preferences={"allow_fallbacks": False})
    worker()
    [item] = items_of(db, batch["id"])
    assert item.status in ("pending", "running") and item.attempts == 0
    assert item.error["code"] == "provider_unhealthy"
    assert "Fallbacks are not allowed" in item.error["message"]
    assert fakes["openai"].calls == 0  # never silently sent anywhere
    breakers(app).force(SYNC, "closed")
    with db.session() as s:  # the wait is a delayed retry; make it due now
        from batchrouter.models import OutboxMessage
        s.execute(update(OutboxMessage).values(available_at=OutboxMessage.created_at))
    drive(db, worker, batch["id"])
    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert body["status"] == "completed"
    [row] = get_json(client, secret, f"/v1/batches/{batch['id']}/receipt")["items"]
    assert row["final_lane"] == SYNC


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_POLL_INTERVAL": 1.0}], indirect=True)
def test_hybrid_items_unfinished_at_80_percent_move_to_the_cheapest_sync_lane(
        app, client, db, owner, worker, fakes):
    _ws, secret = owner
    fakes["openai"].batch_script = [("in_progress", 0.0)]  # the provider batch never finishes
    _q, batch = quote_and_create(client, secret, [chat(f"h-{i}", "gpt-4o-mini") for i in
                                                  range(3)], routing_mode="hybrid")
    worker()
    rows = get_json(client, secret, f"/v1/batches/{batch['id']}/receipt")["items"]
    assert all(r["attempts"] == [] for r in rows)  # still at the provider
    with db.session() as s:  # 85 % of the SLA window has passed
        row = s.get(Batch, batch["id"])
        window = (row.sla_deadline - utcnow()) / 0.15
        row.created_at = row.sla_deadline - window
    with db.session() as s:
        assert tail.move_tail(s) == 3
    drive(db, worker, batch["id"])

    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert body["status"] == "completed" and body["counts"]["succeeded"] == 3
    rows = get_json(client, secret, f"/v1/batches/{batch['id']}/receipt")["items"]
    assert {r["final_lane"] for r in rows} == {SYNC}  # cheapest sync lane on the ladder
    assert all(r["quoted_lane"] == "openai/gpt-4o-mini/batch" for r in rows)
    [stuck] = fakes["openai"].batches.values()
    assert stuck["status"] == "cancelled"


# --- operator console ------------------------------------------------------------------------

@pytest.fixture
def operator_client(app, client, session, seeded_catalog):
    make_user(session, "ops@example.com", operator=True)
    login(client, "ops@example.com")
    return client


def test_operator_saves_a_key_that_is_encrypted_and_never_shown_again(
        app, operator_client, db, fakes):
    client = operator_client
    token = get_csrf(client, "/operator/providers")
    response = client.post("/operator/providers/anthropic", data={
        "csrf_token": token, "api_key": "sk-ant-console-key-9876",
        "base_url": fakes["anthropic"].url, "requests_per_minute": "120"})
    assert response.status_code == 303
    stored = read(db, lambda s: s.get(ProviderCredential, "anthropic"))
    assert "9876" not in stored.api_key_encrypted and stored.key_last4 == "9876"
    assert stored.requests_per_minute == 120
    page = client.get("/operator/providers").get_data(as_text=True)
    assert "…9876" in page and "sk-ant-console-key" not in page
    # Test connection (htmx) uses the saved key against the provider.
    response = client.post("/operator/providers/anthropic/test",
                           data={"csrf_token": token}, headers={"HX-Request": "true"})
    assert "connected" in response.get_data(as_text=True)
    assert fakes["anthropic"].stub.requests[-1].headers.get("authorization", "").endswith(
        "sk-ant-console-key-9876") or \
        fakes["anthropic"].stub.requests[-1].headers.get("x-api-key") == "sk-ant-console-key-9876"
    # A bad base URL fails with the classified reason, not a 500.
    client.post("/operator/providers/anthropic", data={
        "csrf_token": token, "api_key": "", "base_url": "http://127.0.0.1:9"})
    response = client.post("/operator/providers/anthropic/test", data={"csrf_token": token},
                           headers={"HX-Request": "true"})
    assert "failed" in response.get_data(as_text=True)
    assert "provider_connection_error" in response.get_data(as_text=True)
    # Bad input gets a message, never a 500.
    response = client.post("/operator/providers/anthropic", data={
        "csrf_token": token, "api_key": "short", "base_url": "ftp://x"},
        follow_redirects=True)
    assert response.status_code == 200 and "Not saved" in response.get_data(as_text=True)


def test_non_operators_cannot_see_or_change_provider_access(app, client, session,
                                                            seeded_catalog):
    make_user(session, "user@example.com")
    login(client, "user@example.com")
    assert client.get("/operator/providers").status_code == 403
    token = get_csrf(client, "/api-keys")
    assert client.post("/operator/providers/openai", data={
        "csrf_token": token, "api_key": "sk-evil-12345678"}).status_code == 403


def test_a_registered_compatible_server_runs_a_batch(app, operator_client, db, worker,
                                                     fakes, session):
    client = operator_client
    token = get_csrf(client, "/operator/providers")
    response = client.post("/operator/providers/register", data={
        "csrf_token": token, "slug": "local-vllm", "name": "Local vLLM",
        "base_url": fakes["openrouter"].url + "/v1"})
    assert response.status_code == 303
    provider = read(db, lambda s: s.get(Provider, "local-vllm"))
    assert provider.adapter == "compatible"
    with db.session() as s:  # its model and price, as an operator adds them to the catalog
        s.add(Offering(provider_slug="local-vllm", model_slug="llama-3.1-8b-instruct",
                       mode="sync", provider_model_id="meta-llama/Llama-3.1-8B-Instruct",
                       input_micros_per_mtok=10_000, output_micros_per_mtok=10_000,
                       turnaround_p50_s=5, turnaround_p90_s=20, position=0))
    user = make_user(session, "dev@example.com")
    from tests.factories import make_key
    _key, secret = make_key(session, user)
    _q, batch = quote_and_create(client, secret, [chat("v-1", "llama-3.1-8b-instruct")],
                                 provider_preferences={"only": ["local-vllm"]})
    drive(db, worker, batch["id"])
    [row] = get_json(client, secret, f"/v1/batches/{batch['id']}/receipt")["items"]
    assert row["final_lane"] == "local-vllm/llama-3.1-8b-instruct/sync"
    sent = fakes["openrouter"].stub.received("POST", "/v1/chat/completions")[-1].json
    assert sent["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert client.get("/v1/catalog/providers", headers=bearer(secret)).status_code == 200
