"""POST /v1/quotes/model (alias POST /v1/batches/quote): the price lock a user gets
(SPEC §4, §6)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from batchrouter import money, routing
from batchrouter.models import Quote
from tests.factories import bearer, make_key, read
from tests.quote.helpers import (
    DECIMAL,
    QUOTE,
    QUOTE_ALIAS,
    chat,
    embed,
    jsonl,
    openai_line,
    quote,
    upload_raw,
)

OPENAI = {"OPENAI_API_KEY": "sk-test"}


def ok(response) -> dict:
    assert response.status_code == 201, response.get_data(as_text=True)[:1000]
    return response.get_json()


def error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:1000]
    err = response.get_json()["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    return err


def parse_time(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value[:-1])


def quote_count(db) -> int:
    return read(db, lambda s: s.scalar(select(func.count()).select_from(Quote)))


def multi(item_id: str, models: list, **knobs) -> dict:
    item = chat(item_id, **knobs)
    del item["model"]
    item["models"] = models
    return item


# --- the response ----------------------------------------------------------------------------

def test_quote_response_shape(client, secret):
    body = ok(quote(client, secret, [chat(f"c{n}") for n in range(3)] + [embed("e1")]))
    assert body["quote_id"].startswith("qlock_") and body["id"] == body["quote_id"]
    assert body["object"] == "quote" and body["status"] == "open" and body["mode"] == "live"
    assert body["item_count"] == 4
    assert len(body["manifest_sha256"]) == 64 and body["input_file_id"] is None
    created, expires = parse_time(body["created_at"]), parse_time(body["expires_at"])
    assert expires - created == timedelta(minutes=10)
    assert abs(datetime.now(UTC).replace(tzinfo=None) - created) < timedelta(minutes=1)
    est = body["pricing_estimate"]
    for key in ("low", "expected", "high", "provider_subtotal", "fee"):
        assert isinstance(est[key], str) and DECIMAL.match(est[key]), (key, est)
    low, expected, high = (money.parse(est[k]) for k in ("low", "expected", "high"))
    assert 0 < low <= expected <= high
    assert money.parse(est["provider_subtotal"]) + money.parse(est["fee"]) == expected
    # Controls are echoed with their defaults.
    assert (body["sla_tier"], body["routing_mode"], body["privacy_tier"]) == \
        ("standard", "cheapest", "standard")
    assert body["allowed_regions"] == ["global"] and body["max_price"] is None
    assert body["provider_preferences"]["allow_fallbacks"] is True


def test_quote_lanes_selected_and_rejected_with_reasons(client, secret):
    body = ok(quote(client, secret, [chat("a"), chat("b"), embed("e")]))
    selected = {lane["lane"]: lane for lane in body["quote_lanes"]["selected"]}
    assert set(selected) == {"sandbox/sandbox-chat/batch", "sandbox/sandbox-embed/batch"}
    chat_lane = selected["sandbox/sandbox-chat/batch"]
    assert chat_lane["selected_items"] == 2 and chat_lane["provider"] == "sandbox"
    assert DECIMAL.match(chat_lane["expected_cost"]) and DECIMAL.match(chat_lane["high_cost"])
    assert chat_lane["batch_discount"] == "0.500000"
    rejected = {(r["lane"], r["code"]): r for r in body["quote_lanes"]["rejected"]}
    assert set(rejected) == {("sandbox/sandbox-chat/sync", "higher_cost"),
                             ("sandbox/sandbox-embed/sync", "higher_cost")}
    row = rejected[("sandbox/sandbox-chat/sync", "higher_cost")]
    assert row["items"] == 2
    assert row["reason"] == routing.REASONS["higher_cost"]


def test_rejections_name_unconfigured_providers(client, secret):
    body = ok(quote(client, secret, [multi("a", ["gpt-4o-mini", "sandbox-chat"])]))
    rejected = {(r["lane"], r["code"]) for r in body["quote_lanes"]["rejected"]}
    assert ("openai/gpt-4o-mini/batch", "provider_not_configured") in rejected
    assert ("openrouter/gpt-4o-mini/sync", "provider_not_configured") in rejected
    assert [s["lane"] for s in body["quote_lanes"]["selected"]] == ["sandbox/sandbox-chat/batch"]
    for r in body["quote_lanes"]["rejected"]:
        assert r["reason"] == routing.REASONS[r["code"]]


def test_work_unit_plan(client, secret):
    body = ok(quote(client, secret, [chat(f"c{n}") for n in range(5)] + [embed("e")]))
    plan = {p["lane"]: p for p in body["work_unit_plan"]}
    assert plan["sandbox/sandbox-chat/batch"]["items"] == 5
    assert plan["sandbox/sandbox-chat/batch"]["work_units"] == 1
    assert plan["sandbox/sandbox-embed/batch"]["items"] == 1
    assert sum(p["items"] for p in body["work_unit_plan"]) == 6


def test_get_quote_returns_the_stored_lock(client, secret):
    body = ok(quote(client, secret, [chat("a")]))
    again = client.get(f"/v1/quotes/{body['quote_id']}", headers=bearer(secret))
    assert again.status_code == 200
    stored = again.get_json()
    assert stored["pricing_estimate"] == body["pricing_estimate"]
    assert stored["expires_at"] == body["expires_at"]
    assert client.get("/v1/quotes/qlock_nope", headers=bearer(secret)).status_code == 404


def test_alias_batches_quote_works(client, secret):
    body = ok(quote(client, secret, [chat("a"), openai_line("b")], path=QUOTE_ALIAS))
    assert body["quote_id"].startswith("qlock_") and body["item_count"] == 2


def test_routing_controls_change_the_selection(client, secret):
    body = ok(quote(client, secret, [chat("a")], sla_tier="priority", routing_mode="sla_aware",
                    provider_preferences={"allow_fallbacks": False}))
    assert (body["sla_tier"], body["routing_mode"]) == ("priority", "sla_aware")
    assert body["provider_preferences"]["allow_fallbacks"] is False


# --- balance -------------------------------------------------------------------------------

@pytest.mark.parametrize("app_overrides", [OPENAI], indirect=True)
def test_balance_does_not_cover_a_big_high_estimate(client, secret):
    # o4-mini batch: 100,000 output tokens × $4.40/M × 0.5 ≈ $0.22 an item; 50 items ≈ $11.7
    # against $5.00 of starter credits.
    items = [chat(f"c{n}", model="o4-mini", max_output_tokens=100_000) for n in range(50)]
    body = ok(quote(client, secret, items))
    high = money.parse(body["pricing_estimate"]["high"])
    assert high > 5_000_000
    assert [s["lane"] for s in body["quote_lanes"]["selected"]] == ["openai/o4-mini/batch"]
    balance = body["balance"]
    assert balance["covers_high"] is False
    assert balance["available"] == "5.000000"
    assert balance["shortfall"] == money.to_wire(high - 5_000_000)
    assert balance["reserve_on_create"] == body["pricing_estimate"]["high"]


def test_balance_covers_a_small_quote(client, secret):
    balance = ok(quote(client, secret, [chat("a")]))["balance"]
    assert balance["covers_high"] is True
    assert balance["shortfall"] == "0.000000" and balance["available"] == "5.000000"


# --- test mode -----------------------------------------------------------------------------

@pytest.mark.parametrize("app_overrides", [OPENAI], indirect=True)
def test_test_mode_key_sees_only_sandbox_lanes(client, test_secret):
    items = [multi("a", ["gpt-4o-mini", "sandbox-chat"]), multi("b", ["gpt-4o", "sandbox-chat"])]
    body = ok(quote(client, test_secret, items))
    assert body["mode"] == "test"
    assert {s["provider"] for s in body["quote_lanes"]["selected"]} == {"sandbox"}
    rejected = {(r["lane"], r["code"]) for r in body["quote_lanes"]["rejected"]}
    for lane in ("openai/gpt-4o-mini/batch", "openai/gpt-4o-mini/sync", "openai/gpt-4o/batch",
                 "openrouter/gpt-4o/sync"):
        assert (lane, "provider_excluded") in rejected, rejected
    assert body["balance"]["reserve_on_create"] == "0.000000"
    assert money.parse(body["pricing_estimate"]["expected"]) > 0  # prices are still shown


@pytest.mark.parametrize("app_overrides", [OPENAI], indirect=True)
def test_test_mode_key_with_only_non_sandbox_models_has_no_lane(client, test_secret):
    err = error(quote(client, test_secret, [chat("a", model="gpt-4o-mini")]), 422,
                "no_eligible_lane")
    lanes = {row["lane"]: row["code"] for row in err["details"]["items"][0]["lanes"]}
    assert lanes == {"openai/gpt-4o-mini/batch": "provider_excluded",
                     "openai/gpt-4o-mini/sync": "provider_excluded",
                     "openrouter/gpt-4o-mini/sync": "provider_excluded"}


@pytest.mark.parametrize("app_overrides", [OPENAI], indirect=True)
def test_live_key_with_the_same_items_uses_openai(client, secret):
    body = ok(quote(client, secret, [chat("a", model="gpt-4o-mini")]))
    assert [s["lane"] for s in body["quote_lanes"]["selected"]] == ["openai/gpt-4o-mini/batch"]


# --- files ---------------------------------------------------------------------------------

def test_quote_from_an_uploaded_file(client, secret):
    data = jsonl(chat("a"), chat("b"), embed("c"))
    upload = upload_raw(client, secret, data)
    assert upload.status_code == 201
    file = upload.get_json()
    assert file["id"].startswith("file_") and file["status"] == "processed"
    body = ok(client.post(QUOTE, headers=bearer(secret), json={"input_file_id": file["id"]}))
    assert body["input_file_id"] == file["id"]
    assert body["item_count"] == 3
    assert body["manifest_sha256"] == file["sha256"]
    inline = ok(quote(client, secret, [chat("a"), chat("b"), embed("c")]))
    assert inline["pricing_estimate"] == body["pricing_estimate"]


def test_unknown_file_id_is_404(client, secret):
    response = client.post(QUOTE, headers=bearer(secret), json={"input_file_id": "file_nope"})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "file_not_found"


def test_another_workspaces_file_is_404(client, secret, session):
    from tests.factories import make_user

    other = make_user(session, "other@example.com")
    other_secret = make_key(session, other)[1]
    file_id = upload_raw(client, other_secret, jsonl(chat("a"))).get_json()["id"]
    response = client.post(QUOTE, headers=bearer(secret), json={"input_file_id": file_id})
    assert response.status_code == 404


@pytest.mark.parametrize("body", [{}, {"items": "nope"}, {"items": [], "input_file_id": "f"}],
                         ids=["neither", "items-not-a-list", "both"])
def test_manifest_must_be_items_or_a_file(client, secret, body):
    error(client.post(QUOTE, headers=bearer(secret), json=body), 400, "invalid_manifest")


# --- invalid controls ----------------------------------------------------------------------

@pytest.mark.parametrize("controls, field", [
    ({"routing_mode": "fastest"}, "routing_mode"),
    ({"sla_tier": "asap"}, "sla_tier"),
    ({"privacy_tier": "secret"}, "privacy_tier"),
    ({"max_price": 12.5}, "max_price"),
    ({"max_price": {"currency": "usd", "amount": "twelve"}}, "max_price"),
    ({"max_price": {"currency": "eur", "amount": "12.50"}}, "max_price"),
    ({"max_price": {"currency": "usd", "amount": "1.0000001"}}, "max_price"),
    ({"max_price": {"currency": "usd", "amount": "-1"}}, "max_price"),
    ({"allowed_regions": "eu"}, "allowed_regions"),
    ({"provider_preferences": {"only": "openai"}}, "provider_preferences.only"),
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_invalid_controls_are_422(client, secret, db, controls, field):
    err = error(quote(client, secret, [chat("a")], **controls), 422, "invalid_controls")
    assert err["details"]["field"] == field
    assert quote_count(db) == 0


def test_max_price_amount_as_a_float_is_422(client, secret):
    response = quote(client, secret, [chat("a")],
                     max_price={"currency": "usd", "amount": 12.5})
    err = error(response, 422, "invalid_controls")
    assert err["details"]["field"] == "max_price"


def test_invalid_data_collection_is_422(client, secret):
    error(quote(client, secret, [chat("a")], provider_preferences={"data_collection": "maybe"}),
          422, "invalid_controls")


def test_allow_fallbacks_given_as_a_string_is_not_silently_true(client, secret):
    response = quote(client, secret, [chat("a")],
                     provider_preferences={"allow_fallbacks": "false"})
    if response.status_code == 422:
        assert response.get_json()["error"]["code"] == "invalid_controls"
    else:
        body = ok(response)
        assert body["provider_preferences"]["allow_fallbacks"] is False


def test_max_price_as_a_decimal_string_is_accepted(client, secret):
    body = ok(quote(client, secret, [chat("a")], max_price={"currency": "usd", "amount": "12.50"}))
    assert body["max_price"] == {"currency": "usd", "amount": "12.500000"}


# --- rejections ----------------------------------------------------------------------------

@pytest.mark.parametrize("app_overrides", [OPENAI], indirect=True)
def test_no_eligible_lane_for_zdr_on_openai_models(client, secret, db):
    err = error(quote(client, secret, [chat("ok", model="gpt-4o-mini"),
                                       chat("b", model="gpt-4o")], privacy_tier="zdr"),
                422, "no_eligible_lane")
    details = err["details"]
    assert details["unroutable_count"] == 2
    first = details["items"][0]
    assert (first["customer_item_id"], first["line"]) == ("ok", 1)
    lanes = {row["lane"]: row for row in first["lanes"]}
    assert lanes["openai/gpt-4o-mini/batch"]["code"] == "privacy_mismatch"
    assert lanes["openai/gpt-4o-mini/sync"]["code"] == "privacy_mismatch"
    assert lanes["openrouter/gpt-4o-mini/sync"]["code"] == "provider_not_configured"
    assert lanes["openai/gpt-4o-mini/batch"]["reason"] == routing.REASONS["privacy_mismatch"]
    assert quote_count(db) == 0


def test_zdr_is_satisfied_by_sandbox(client, secret):
    body = ok(quote(client, secret, [chat("a")], privacy_tier="zdr"))
    assert body["privacy_tier"] == "zdr"


def test_over_max_price_is_422_with_the_cheapest_high_total(client, secret, db):
    err = error(quote(client, secret, [chat(f"c{n}", content="x" * 5000) for n in range(3)],
                      max_price={"currency": "usd", "amount": "0.000001"}), 422, "over_max_price")
    details = err["details"]
    assert details["max_price"] == "0.000001"
    assert money.parse(details["high_total"]) > 1
    assert DECIMAL.match(details["cheapest_high_total"])
    assert details["cheapest_fits"] is False
    assert quote_count(db) == 0


def test_region_exclusion_reaches_the_user(client, secret):
    err = error(quote(client, secret, [chat("a")], allowed_regions=["eu"]), 422,
                "no_eligible_lane")
    codes = {row["code"] for row in err["details"]["items"][0]["lanes"]}
    assert codes == {"region_excluded"}


def test_provider_preferences_ignore_reaches_the_user(client, secret):
    err = error(quote(client, secret, [chat("a")],
                      provider_preferences={"ignore": ["sandbox"]}), 422, "no_eligible_lane")
    codes = {row["code"] for row in err["details"]["items"][0]["lanes"]}
    assert codes == {"provider_excluded"}


# --- auth and idempotency ------------------------------------------------------------------

def test_quote_needs_a_key_with_the_quote_scope(client, session, owner, seeded_catalog):
    assert client.post(QUOTE, json={"items": [chat("a")]}).status_code == 401
    read_only = make_key(session, owner, scopes=["read"])[1]
    error(quote(client, read_only, [chat("a")]), 403, "insufficient_scope")


def test_idempotency_key_replays_the_same_quote(client, secret, db):
    headers = {**bearer(secret), "Idempotency-Key": "quote-1"}
    first = client.post(QUOTE, headers=headers, json={"items": [chat("a")]})
    second = client.post(QUOTE, headers=headers, json={"items": [chat("a")]})
    assert first.status_code == second.status_code == 201
    assert first.get_json()["quote_id"] == second.get_json()["quote_id"]
    assert quote_count(db) == 1
    conflict = client.post(QUOTE, headers=headers, json={"items": [chat("b")]})
    assert conflict.status_code == 409


# --- rejection codes a user sees on real catalog lanes --------------------------------------

ALL_KEYS = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant",
            "OPENROUTER_API_KEY": "sk-or"}


def rejected_codes(body) -> dict:
    return {r["lane"]: r["code"] for r in body["quote_lanes"]["rejected"]}


def test_operation_unsupported_for_a_models_list(client, secret):
    body = ok(quote(client, secret, [multi("a", ["sandbox-embed", "sandbox-chat"])]))
    codes = rejected_codes(body)
    assert codes["sandbox/sandbox-embed/batch"] == "operation_unsupported"
    assert codes["sandbox/sandbox-embed/sync"] == "operation_unsupported"


@pytest.mark.parametrize("app_overrides", [ALL_KEYS], indirect=True)
def test_feature_unsupported_moves_the_item_off_the_cheapest_model(client, secret):
    models = ["llama-3.1-8b-instruct", "sandbox-chat"]
    plain = ok(quote(client, secret, [multi("a", models)]))
    assert [s["lane"] for s in plain["quote_lanes"]["selected"]] == \
        ["openrouter/llama-3.1-8b-instruct/sync"]
    structured = ok(quote(client, secret, [multi("a", models,
                                                 response_format={"type": "json_object"})]))
    assert [s["lane"] for s in structured["quote_lanes"]["selected"]] == \
        ["sandbox/sandbox-chat/batch"]
    assert rejected_codes(structured)["openrouter/llama-3.1-8b-instruct/sync"] == \
        "feature_unsupported"


@pytest.mark.parametrize("app_overrides", [ALL_KEYS], indirect=True)
@pytest.mark.parametrize("controls", [{"privacy_tier": "no_training"},
                                      {"provider_preferences": {"data_collection": "deny"}}],
                         ids=["no_training", "data_collection-deny"])
def test_privacy_mismatch_for_lanes_that_train_on_data(client, secret, controls):
    body = ok(quote(client, secret, [multi("a", ["llama-3.1-8b-instruct", "sandbox-chat"])],
                    **controls))
    assert rejected_codes(body)["openrouter/llama-3.1-8b-instruct/sync"] == "privacy_mismatch"
    assert [s["lane"] for s in body["quote_lanes"]["selected"]] == ["sandbox/sandbox-chat/batch"]


@pytest.mark.parametrize("app_overrides", [ALL_KEYS], indirect=True)
def test_sla_infeasible_for_priority_on_batch_lanes(client, secret):
    body = ok(quote(client, secret, [chat("a", model="gpt-4o-mini")], sla_tier="priority"))
    codes = rejected_codes(body)
    assert codes["openai/gpt-4o-mini/batch"] == "sla_infeasible"  # p90 6 h > 1 h
    assert [s["lane"] for s in body["quote_lanes"]["selected"]] == ["openai/gpt-4o-mini/sync"]


@pytest.mark.parametrize("app_overrides", [ALL_KEYS], indirect=True)
def test_provider_unhealthy_when_the_breaker_is_open(client, secret, session):
    from batchrouter.models import Provider

    session.get(Provider, "openai").breaker_open = True
    session.commit()
    body = ok(quote(client, secret, [chat("a", model="gpt-4o-mini")]))
    codes = rejected_codes(body)
    assert codes["openai/gpt-4o-mini/batch"] == "provider_unhealthy"
    assert [s["lane"] for s in body["quote_lanes"]["selected"]] == \
        ["openrouter/gpt-4o-mini/sync"]


@pytest.mark.parametrize("app_overrides", [ALL_KEYS], indirect=True)
def test_provider_only_preference(client, secret):
    body = ok(quote(client, secret, [chat("a", model="gpt-4o-mini")],
                    provider_preferences={"only": ["openrouter"]}))
    assert rejected_codes(body)["openai/gpt-4o-mini/batch"] == "provider_excluded"
    assert [s["lane"] for s in body["quote_lanes"]["selected"]] == \
        ["openrouter/gpt-4o-mini/sync"]


def test_capacity_overflow_moves_items_to_the_next_lane(client, secret, session):
    from batchrouter.models import Offering

    batch = session.scalars(select(Offering).where(Offering.provider_slug == "sandbox",
                                                   Offering.model_slug == "sandbox-chat",
                                                   Offering.mode == "batch")).one()
    batch.capacity_items = 2
    session.commit()
    body = ok(quote(client, secret, [chat(f"c{n}") for n in range(5)]))
    selected = {s["lane"]: s["selected_items"] for s in body["quote_lanes"]["selected"]}
    assert selected == {"sandbox/sandbox-chat/batch": 2, "sandbox/sandbox-chat/sync": 3}
    rows = {(r["lane"], r["code"]): r["items"] for r in body["quote_lanes"]["rejected"]}
    assert rows[("sandbox/sandbox-chat/batch", "capacity_exceeded")] == 3
    plan = {p["lane"]: p["items"] for p in body["work_unit_plan"]}
    assert plan == selected


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_QUOTE_TTL": 0}], indirect=True)
def test_a_quote_past_its_expiry_says_expired(client, secret):
    body = ok(quote(client, secret, [chat("a")]))
    stored = client.get(f"/v1/quotes/{body['quote_id']}", headers=bearer(secret)).get_json()
    assert stored["status"] == "expired"
