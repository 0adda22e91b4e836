"""Pricing exactly as SPEC §4: token heuristic, low/expected/high, batch discount on batch lanes
only, the service fee (5.90 % default, configurable), integer micro-dollars rounded half up per
item, and quote totals that are sums of item amounts. Expected figures are worked out by hand
from batchrouter/data/catalog.json."""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from sqlalchemy import select

from batchrouter import catalog, pricing, quotes
from batchrouter.models import Offering
from tests.quote.helpers import DECIMAL, chat, embed, quote

CREDS = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test"}
CHAT = pricing.ModelSizing("openai", 16384, 500, False)


def half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def oracle(tokens_in, tokens_out, in_rate, out_rate, discount_ppm, fee_ppm):
    """The SPEC formula in Decimal arithmetic (rates are micro-dollars per million tokens)."""
    raw = (Decimal(tokens_in) * in_rate + Decimal(tokens_out) * out_rate) / 10**6
    sub = half_up(raw * (1 - Decimal(discount_ppm) / 10**6))
    return sub, half_up(Decimal(sub) * fee_ppm / 10**6)


# --- token heuristic -----------------------------------------------------------------------

@pytest.mark.parametrize("chars, messages, images, family, tokens", [
    (400, 1, 0, "openai", 100 + 3 + 4),          # chars ÷ 4, request + message overhead
    (401, 1, 0, "openai", 101 + 7),              # rounded up
    (1000, 2, 0, "anthropic", 270 + 3 + 8),      # ×1.08 for Anthropic's tokenizer
    (1000, 1, 0, "llama", 263 + 7),              # ×1.05, ceil(262.5)
    (1000, 0, 0, "openai", 250),                 # embeddings: no message overhead
    (40, 1, 2, "openai", 10 + 7 + 2 * 765),      # images at a fixed cost
    (100, 1, 0, "unknown-family", 25 + 7),       # no correction for unknown families
])
def test_input_token_heuristic(chars, messages, images, family, tokens):
    assert pricing.input_tokens(chars, messages, images, family) == tokens


# --- output figures ------------------------------------------------------------------------

@pytest.mark.parametrize("cap, sizing, figures", [
    (1000, CHAT, (100, 500, 1000)),                      # low 10 % of cap, typical, cap
    (None, CHAT, (500, 500, 16384)),                     # no cap: high = model max output
    (10**6, CHAT, (500, 500, 16384)),                    # a cap above the model max is clamped
    (300, CHAT, (30, 300, 300)),                         # typical above cap: expected = cap
    (1001, pricing.ModelSizing("openai", 8000, 0, False), (101, 500, 1001)),  # half the cap
    (None, pricing.ModelSizing("x", 0, 0, True), (0, 0, 0)),  # embeddings produce no output
])
def test_low_expected_high_output_tokens(cap, sizing, figures):
    assert pricing.output_tokens(cap, sizing) == figures


def test_low_is_never_above_expected():
    low, expected, high = pricing.output_tokens(16000, CHAT)
    assert (low, expected, high) == (500, 500, 16000)  # 10 % would be 1,600 > typical 500


# --- money arithmetic ----------------------------------------------------------------------

def test_subtotal_rounds_half_up_in_micro_dollars():
    assert pricing.subtotal(1, 0, 500_000, 0, 0) == 1        # 0.5 µ$ -> 1
    assert pricing.subtotal(1, 0, 499_999, 0, 0) == 0        # just below half -> 0
    assert pricing.subtotal(3, 0, 500_000, 0, 0) == 2        # 1.5 -> 2 (not banker's 2)
    assert pricing.subtotal(5, 0, 500_000, 0, 0) == 3        # 2.5 -> 3 (banker's would be 2)
    assert pricing.subtotal(1, 0, 1_000_000, 0, 500_000) == 1  # 0.5 after discount -> 1


def test_fee_rounds_half_up():
    assert pricing.fee(10, 50_000) == 1       # 0.5 -> 1
    assert pricing.fee(30, 50_000) == 2       # 1.5 -> 2
    assert pricing.fee(50, 50_000) == 3       # 2.5 -> 3
    assert pricing.fee(8, 59_000) == 0        # 0.472 -> 0
    assert pricing.fee(1_000_000, 59_000) == 59_000  # 5.90 % of $1


@pytest.mark.parametrize("tokens_in, tokens_out, in_rate, out_rate, discount, fee_ppm", [
    (257, 500, 2_500_000, 10_000_000, 500_000, 59_000),
    (257, 500, 2_500_000, 10_000_000, 0, 59_000),
    (123_457, 98_765, 150_000, 600_000, 500_000, 59_000),
    (1, 1, 1, 1, 0, 59_000),
    (10**7, 10**5, 15_000_000, 75_000_000, 500_000, 123_456),
    (999, 0, 20_000, 0, 500_000, 0),
])
def test_price_matches_the_spec_formula(tokens_in, tokens_out, in_rate, out_rate, discount,
                                        fee_ppm):
    assert pricing.price(tokens_in, tokens_out, in_rate, out_rate, discount, fee_ppm) == \
        oracle(tokens_in, tokens_out, in_rate, out_rate, discount, fee_ppm)


def test_default_fee_is_5_90_percent():
    assert pricing.DEFAULT_FEE_PPM == 59_000
    assert quotes.Settings(credentials={}).fee_ppm == 59_000


# --- batch discount on batch lanes only ----------------------------------------------------

def test_batch_discount_applies_on_batch_lanes_only(session, seeded_catalog):
    # Even if an operator import put a discount on a sync offering, routing ignores it.
    sync = session.scalars(select(Offering).where(Offering.provider_slug == "sandbox",
                                                  Offering.model_slug == "sandbox-chat",
                                                  Offering.mode == "sync")).one()
    sync.batch_discount_ppm = 500_000
    session.commit()
    by_name = {ln.name: ln for ln in catalog.load_lanes(session)}
    assert by_name["sandbox/sandbox-chat/batch"].discount_ppm == 500_000
    assert by_name["sandbox/sandbox-chat/sync"].discount_ppm == 0
    assert by_name["openai/gpt-4o/batch"].discount_ppm == 500_000
    assert by_name["openai/gpt-4o/sync"].discount_ppm == 0
    assert by_name["openrouter/gpt-4o/sync"].discount_ppm == 0


# --- through the API, by hand from catalog.json --------------------------------------------
# gpt-4o on openai: $2.50 in / $10.00 out per million tokens, batch discount 0.50; the model's
# typical output is 500 tokens. One message of 1,000 characters, max_output_tokens 2,000:
#   input tokens  = 1000 / 4 + 3 (request) + 4 (message)              = 257
#   output tokens = low 200 (10 % of 2,000), expected 500, high 2,000
#   batch expected subtotal = (257 × 2.5 + 500 × 10) / 1e6 $ × 0.5 = 2,821.25 µ$ -> 2,821
#   fee = 2,821 × 5.90 % = 166.439 -> 166;  expected = 2,987 µ$
#   low:  (642.5 + 2,000) × 0.5 = 1,321.25 -> 1,321; fee 77.939 -> 78;   total 1,399
#   high: (642.5 + 20,000) × 0.5 = 10,321.25 -> 10,321; fee 608.939 -> 609; total 10,930
GPT4O_ITEM = {"model": "gpt-4o", "content": "x" * 1000, "max_output_tokens": 2000}


def _lane(body, name):
    return next(ln for ln in body["quote_lanes"]["selected"] if ln["lane"] == name)


@pytest.mark.parametrize("app_overrides", [CREDS], indirect=True)
def test_hand_computed_quote_on_a_batch_lane(client, secret):
    response = quote(client, secret, [chat("a", **GPT4O_ITEM)])
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    est = body["pricing_estimate"]
    assert (est["low"], est["expected"], est["high"]) == ("0.001399", "0.002987", "0.010930")
    assert (est["provider_subtotal"], est["fee"]) == ("0.002821", "0.000166")
    assert est["fee_rate"] == "0.059000" and est["total"] == est["expected"]
    lane = _lane(body, "openai/gpt-4o/batch")
    assert (lane["input_per_mtok"], lane["output_per_mtok"], lane["batch_discount"]) == \
        ("2.500000", "10.000000", "0.500000")
    assert (lane["expected_cost"], lane["high_cost"]) == ("0.002987", "0.010930")
    assert body["balance"]["reserve_on_create"] == "0.010930"


@pytest.mark.parametrize("app_overrides", [CREDS], indirect=True)
def test_hand_computed_quote_on_a_sync_lane_has_no_discount(client, secret, session):
    batch = session.scalars(select(Offering).where(Offering.provider_slug == "openai",
                                                   Offering.model_slug == "gpt-4o",
                                                   Offering.mode == "batch")).one()
    batch.enabled = False
    session.commit()
    body = quote(client, secret, [chat("a", **GPT4O_ITEM)]).get_json()
    # (642.5 + 5,000) = 5,642.5 -> 5,643 (half up); fee 332.937 -> 333; total 5,976
    assert _lane(body, "openai/gpt-4o/sync")["batch_discount"] == "0.000000"
    est = body["pricing_estimate"]
    assert (est["provider_subtotal"], est["fee"], est["expected"]) == \
        ("0.005643", "0.000333", "0.005976")
    rejected = {(r["lane"], r["code"]) for r in body["quote_lanes"]["rejected"]}
    assert ("openai/gpt-4o/batch", "provider_not_configured") in rejected


@pytest.mark.parametrize("app_overrides", [CREDS], indirect=True)
def test_totals_are_sums_of_per_item_rounded_amounts(client, secret):
    # Two items at 2,821.25 µ$ each: per-item rounding gives 2 × 2,821 = 5,642, where rounding
    # the batch total would give 5,643 (5,642.5 half up).
    body = quote(client, secret, [chat("a", **GPT4O_ITEM), chat("b", **GPT4O_ITEM)]).get_json()
    est = body["pricing_estimate"]
    assert (est["provider_subtotal"], est["fee"], est["expected"]) == \
        ("0.005642", "0.000332", "0.005974")
    assert (est["low"], est["high"]) == ("0.002798", "0.021860")


@pytest.mark.parametrize("app_overrides", [CREDS], indirect=True)
def test_hand_computed_anthropic_family_correction(client, secret):
    # claude-haiku-4-5: $1 / $5, discount 0.50, typical 450. 1,000 chars × 1.08 / 4 = 270 + 7
    # expected: (277 + 450 × 5) × 0.5 = 1,263.5 -> 1,264; fee 74.576 -> 75; total 1,339
    body = quote(client, secret, [chat("a", model="claude-haiku-4-5", content="z" * 1000,
                                       max_output_tokens=1000)]).get_json()
    est = body["pricing_estimate"]
    assert (est["provider_subtotal"], est["fee"], est["expected"]) == \
        ("0.001264", "0.000075", "0.001339")
    assert _lane(body, "anthropic/claude-haiku-4-5/batch")["selected_items"] == 1


@pytest.mark.parametrize("app_overrides", [CREDS], indirect=True)
def test_hand_computed_embeddings_price(client, secret):
    # text-embedding-3-small: $0.02 in, batch 0.50; 4,000 chars -> 1,000 tokens, no output.
    # 1,000 × 0.02 × 0.5 = 10 µ$; fee 0.59 -> 1; low = expected = high = 11 µ$.
    body = quote(client, secret, [embed("e", model="text-embedding-3-small",
                                        text="w" * 4000)]).get_json()
    est = body["pricing_estimate"]
    assert (est["low"], est["expected"], est["high"]) == ("0.000011",) * 3
    assert (est["provider_subtotal"], est["fee"]) == ("0.000010", "0.000001")


@pytest.mark.parametrize("app_overrides", [{**CREDS, "BATCHROUTER_SERVICE_FEE_PPM": 100_000}],
                         indirect=True)
def test_service_fee_is_configurable(client, secret):
    body = quote(client, secret, [chat("a", **GPT4O_ITEM)]).get_json()
    est = body["pricing_estimate"]
    # subtotal 2,821 (unchanged); fee 10 % = 282.1 -> 282; expected 3,103
    assert (est["provider_subtotal"], est["fee"], est["expected"]) == \
        ("0.002821", "0.000282", "0.003103")
    assert est["fee_rate"] == "0.100000"
    assert body["assumptions"]["service_fee_rate"] == "0.100000"


def test_figures_are_decimal_strings(client, secret):
    body = quote(client, secret, [chat("a"), embed("b")]).get_json()
    for key in ("low", "expected", "high", "provider_subtotal", "fee", "fee_rate", "total"):
        assert DECIMAL.match(body["pricing_estimate"][key]), (key, body["pricing_estimate"])
    assert body["pricing_estimate"]["currency"] == "usd"
