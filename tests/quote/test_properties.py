"""Hypothesis properties of routing and quoting (SPEC §4), deterministic (derandomized).

1. a selected lane (and every lane on its fallback ladder) is eligible;
2. under `cheapest` no eligible lane has a lower expected price than the chosen one;
3. an accepted quote never exceeds max_price (create_quote raises over_max_price instead);
4. quote totals equal the sum of the per-item figures stored in the quote's selections.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchrouter import manifest, money, quotes, routing
from batchrouter.catalog import Lane
from tests.factories import make_user, workspace_of
from tests.quote.helpers import create_quote
from tests.quote.lanes import SIZING, context, expected_price, figures

PROPS = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])
MODELS = tuple(SIZING)
PROVIDERS = ("p1", "p2", "p3", "sandbox")
FEATURES = ("tools", "structured_output", "vision")


def subset(values, min_size=0):
    return st.lists(st.sampled_from(values), min_size=min_size, max_size=len(values),
                    unique=True).map(tuple)


def mostly(default, other):
    """`default` about five times in six, else a draw from `other` (keeps lanes eligible
    often enough for the properties to bite, while still exercising every rule)."""
    return st.sampled_from(range(6)).flatmap(lambda k: other if k == 5 else st.just(default))


@st.composite
def lane_lists(draw, with_capacity=True):
    n = draw(st.integers(1, 10))
    out = []
    for index in range(n):
        mode = draw(st.sampled_from(("batch", "sync")))
        out.append(Lane(
            index=index, offering_id=index + 1, provider=draw(st.sampled_from(PROVIDERS)),
            model=draw(st.sampled_from(("chat", "chat", "chat2", "embed"))), mode=mode,
            provider_model_id="m", input_rate=draw(st.integers(0, 20_000_000)),
            output_rate=draw(st.integers(0, 80_000_000)),
            discount_ppm=draw(st.sampled_from((0, 500_000))) if mode == "batch" else 0,
            trains_on_data=draw(mostly(False, st.booleans())),
            zdr=draw(mostly(True, st.booleans())),
            regions=draw(mostly(("global",), subset(("us", "eu", "global"), 1))),
            features=frozenset(draw(mostly(FEATURES, subset(FEATURES)))),
            p50=10, p90=draw(st.sampled_from((600, 5, 1_700, 3_600, 40_000, 50_000, 90_000))),
            capacity=draw(mostly(0, st.sampled_from((1, 2)))) if with_capacity else 0,
            quality=draw(st.sampled_from((0.5, 0.7, 0.9)) | st.floats(0, 1)),
            health=draw(st.sampled_from((1.0, 0.9, 1.0, 0.8, 1.0, 0.5, 0.95, 0.2))),
            enabled=draw(mostly(True, st.booleans())),
            provider_enabled=draw(mostly(True, st.booleans())),
            breaker_open=draw(mostly(False, st.booleans())), position=index))
    return out


@st.composite
def item_lists(draw):
    items = []
    for k in range(draw(st.integers(1, 8))):
        operation = draw(st.sampled_from(("responses", "responses", "vision", "embeddings")))
        usual = ("embed",) if operation == "embeddings" else ("chat", "chat2")
        models = draw(mostly(None, subset(MODELS, 1))) or draw(subset(usual, 1))
        items.append(manifest.ItemSummary(
            k + 1, f"i{k}", operation, models, draw(st.integers(0, 200_000)),
            draw(st.integers(0, 6)), draw(st.integers(0, 2)),
            draw(st.none() | st.integers(1, 100_000)), draw(mostly((), subset(FEATURES)))))
    return items


@st.composite
def controls_strategy(draw, mode=None):
    return routing.Controls(
        sla_tier=draw(st.sampled_from(tuple(routing.SLA_WINDOWS))),
        routing_mode=mode or draw(st.sampled_from(routing.ROUTING_MODES)),
        privacy_tier=draw(mostly("standard", st.sampled_from(routing.PRIVACY_TIERS))),
        allowed_regions=draw(mostly(("global",), subset(("us", "eu", "apac"), 1))),
        preferences=routing.Preferences(
            only=draw(mostly((), subset(PROVIDERS, 1))), ignore=draw(mostly((), subset(PROVIDERS))),
            order=draw(subset(PROVIDERS)), allow_fallbacks=draw(mostly(True, st.just(False))),
            data_collection=draw(mostly("allow", st.just("deny"))),
            zdr=draw(mostly(False, st.just(True)))))


@st.composite
def contexts(draw, with_capacity=True):
    return context(draw(lane_lists(with_capacity)),
                   configured=frozenset(draw(mostly(PROVIDERS, subset(PROVIDERS)))),
                   test_mode=draw(mostly(False, st.just(True))),
                   fee_ppm=draw(st.sampled_from((0, 59_000, 123_456))))


def eligible(ctx, it, ctl):
    return [ln for ln in ctx.lanes if ln.model in it.models and
            routing.lane_rejection(ln, it.operation, it.models, it.needs, ctl, ctx) is None]


# --- 1. selected lanes are eligible ---------------------------------------------------------

@PROPS
@given(ctx=contexts(), items=item_lists(), ctl=controls_strategy())
def test_selected_and_ladder_lanes_are_always_eligible(ctx, items, ctl):
    result = routing.route(items, ctl, ctx)
    assert len(result.choices) == len(items)
    capacity_used = any(ln.capacity for ln in ctx.lanes)
    for it, choice in zip(items, result.choices):
        if choice is None:
            # Unroutable only when nothing is eligible, or capacity ran out.
            assert capacity_used or not eligible(ctx, it, ctl)
            continue
        for index in (choice.lane,) + choice.ladder:
            ln = ctx.lanes[index]
            assert ln.model in it.models
            assert routing.lane_rejection(ln, it.operation, it.models, it.needs, ctl,
                                          ctx) is None
        assert choice.lane not in choice.ladder
        # The figures are those of the lane the item ends on (also after a capacity move).
        assert (choice.low, choice.expected, choice.high) == \
            figures(it, ctx.lanes[choice.lane], ctx)
        assert choice.subtotal + choice.fee == choice.expected
        if not ctl.preferences.allow_fallbacks:
            assert choice.ladder == ()
        assert choice.low <= choice.expected <= choice.high


# --- 2. cheapest means cheapest --------------------------------------------------------------

@PROPS
@given(ctx=contexts(with_capacity=False), items=item_lists(),
       ctl=controls_strategy(mode="cheapest"))
def test_cheapest_never_leaves_a_cheaper_eligible_lane(ctx, items, ctl):
    result = routing.route(items, ctl, ctx)
    for it, choice in zip(items, result.choices):
        candidates = eligible(ctx, it, ctl)
        if choice is None:
            assert candidates == []
            continue
        chosen = ctx.lanes[choice.lane]
        assert choice.expected == expected_price(it, chosen, ctx)
        assert all(choice.expected <= expected_price(it, ln, ctx) for ln in candidates)
        assert {choice.lane, *choice.ladder} == {ln.index for ln in candidates} or \
            not ctl.preferences.allow_fallbacks


@PROPS
@given(ctx=contexts(with_capacity=False), items=item_lists(), ctl=controls_strategy())
def test_every_mode_picks_what_spec_4_says(ctx, items, ctl):
    result = routing.route(items, ctl, ctx)
    half = ctl.window // 2
    for it, choice in zip(items, result.choices):
        candidates = eligible(ctx, it, ctl)
        if choice is None:
            assert candidates == []
            continue
        chosen = ctx.lanes[choice.lane]
        price = {ln.index: expected_price(it, ln, ctx) for ln in candidates}
        if ctl.routing_mode == "sla_aware":
            fitting = [ln for ln in candidates if ln.p90 <= half]
            if fitting:
                assert chosen.p90 <= half
                assert price[chosen.index] == min(price[ln.index] for ln in fitting)
            else:
                assert chosen.p90 == min(ln.p90 for ln in candidates)
        elif ctl.routing_mode == "quality":
            best = max(ln.quality for ln in candidates)
            assert chosen.quality == best
            assert price[chosen.index] == min(price[ln.index] for ln in candidates
                                              if ln.quality == best)
        elif ctl.routing_mode == "hybrid":
            healthy = [ln for ln in candidates if ln.health >= 0.9] or candidates
            assert chosen in healthy
            assert price[chosen.index] == min(price[ln.index] for ln in healthy)
        else:
            assert price[chosen.index] == min(price.values())


# --- 3 and 4. through quotes.create_quote on the seeded catalog ------------------------------

CREDS = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant",
         "OPENROUTER_API_KEY": "sk-or"}
CHAT_MODELS = ("sandbox-chat", "gpt-4o-mini", "gpt-4o", "gpt-4.1-nano", "claude-haiku-4-5",
               "claude-sonnet-4-5", "llama-3.1-8b-instruct", "deepseek-chat-v3")
EMBED_MODELS = ("sandbox-embed", "text-embedding-3-small", "text-embedding-3-large")


@st.composite
def manifest_items(draw):
    items = []
    for k in range(draw(st.integers(1, 6))):
        if draw(st.integers(0, 4)) == 0:
            items.append({"customer_item_id": f"e{k}", "operation": "embeddings",
                          "models": list(draw(subset(EMBED_MODELS, 1))),
                          "input": {"input": "e" * draw(st.integers(1, 30_000))}})
            continue
        body = {"messages": [{"role": "user", "content": "c" * draw(st.integers(0, 30_000))}]
                * draw(st.integers(1, 3))}
        cap = draw(st.none() | st.integers(1, 120_000))
        if cap is not None:
            body["max_output_tokens"] = cap
        items.append({"customer_item_id": f"c{k}", "operation": "responses",
                      "models": list(draw(subset(CHAT_MODELS, 1))), "input": body})
    return items


quote_controls = st.builds(
    routing.Controls, sla_tier=st.sampled_from(tuple(routing.SLA_WINDOWS)),
    routing_mode=st.sampled_from(routing.ROUTING_MODES))


@pytest.fixture
def workspace(session, seeded_catalog):
    return workspace_of(session, make_user(session))


def _create(session, workspace, items, ctl, fee_ppm=59_000):
    settings_ = quotes.Settings(credentials=CREDS, fee_ppm=fee_ppm)
    return create_quote(session, settings_, workspace_id=workspace, items=items, controls=ctl)


@PROPS
@given(items=manifest_items(), ctl=quote_controls, cap=st.integers(0, 3_000_000))
def test_max_price_is_never_exceeded(session, workspace, items, ctl, cap):
    capped = routing.Controls(sla_tier=ctl.sla_tier, routing_mode=ctl.routing_mode,
                              max_price=cap)
    try:
        quote = _create(session, workspace, items, capped)
    except quotes.QuoteRejected as exc:
        assert exc.code == "over_max_price", (exc.code, exc.details)
        assert money.parse(exc.details["high_total"]) > cap
        assert exc.details["max_price"] == money.to_wire(cap)
        assert exc.details["cheapest_fits"] == (money.parse(exc.details["cheapest_high_total"])
                                                <= cap)
    else:
        assert quote.high_micros <= cap
        assert quote.controls["max_price"] == {"currency": "usd", "amount": money.to_wire(cap)}
    finally:
        session.rollback()


@PROPS
@given(items=manifest_items(), ctl=quote_controls,
       fee_ppm=st.sampled_from((0, 59_000, 100_000, 333_333)))
def test_quote_totals_equal_the_sum_of_item_figures(session, workspace, items, ctl, fee_ppm):
    try:
        quote = _create(session, workspace, items, ctl, fee_ppm)
        rows = quotes.decode_selections(quote.selections)
        assert len(rows) == quote.item_count == len(items)
        lanes, lows, expecteds, highs, subs, fees, _ladders = zip(*rows)
        assert quote.low_micros == sum(lows)
        assert quote.expected_micros == sum(expecteds)
        assert quote.high_micros == sum(highs)
        assert quote.provider_subtotal_micros == sum(subs)
        assert quote.fee_micros == sum(fees)
        for low, expected, high, sub, fee in zip(lows, expecteds, highs, subs, fees):
            assert all(isinstance(v, int) for v in (low, expected, high, sub, fee))
            assert low <= expected <= high
            assert expected == sub + fee
            assert fee == (2 * sub * fee_ppm + 10**6) // (2 * 10**6)  # half up, per item
        # The lane table agrees with the selections.
        by_lane = {}
        for lane, expected in zip(lanes, expecteds):
            by_lane[lane] = by_lane.get(lane, 0) + expected
        table = {row["index"]: row for row in quote.lanes if row["selected_items"]}
        assert set(table) == set(by_lane)
        for index, total in by_lane.items():
            assert money.parse(table[index]["expected_cost"]) == total
            assert table[index]["selected_items"] == lanes.count(index)
        assert sum(p["items"] for p in quote.plan) == len(items)
    finally:
        session.rollback()
