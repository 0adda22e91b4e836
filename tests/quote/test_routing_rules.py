"""Routing rules as unit tables (SPEC §4): every rejection code, every routing mode, ladders.

Lanes, contexts and controls are built by hand (tests/quote/lanes.py); no Flask, no database
except the over_max_price tests, which go through quotes.create_quote.
"""
from __future__ import annotations

import pytest

from batchrouter import money, pricing, quotes, routing
from tests.factories import make_user, workspace_of
from tests.quote.helpers import chat, create_quote
from tests.quote.lanes import context, controls, expected_price, item, lane, lanes

# --- lane_rejection: one row per rule -----------------------------------------------------
# (id, lane overrides, item signature overrides, controls overrides, context overrides, code)
REJECTION_TABLE = [
    ("eligible", {}, {}, {}, {}, None),
    ("model_mismatch", {"model": "chat2"}, {}, {}, {}, "model_mismatch"),
    ("operation_unsupported", {"model": "embed"}, {"models": ("embed",)}, {}, {},
     "operation_unsupported"),
    ("operation_unsupported-embeddings-on-chat", {}, {"operation": "embeddings"}, {}, {},
     "operation_unsupported"),
    ("operation_unsupported-vision", {"model": "chat2"}, {"operation": "vision",
                                                         "models": ("chat2",)}, {}, {},
     "operation_unsupported"),
    ("feature_unsupported-tools", {"features": frozenset({"vision"})}, {"needs": ("tools",)},
     {}, {}, "feature_unsupported"),
    ("feature_unsupported-structured", {"features": frozenset({"tools"})},
     {"needs": ("tools", "structured_output")}, {}, {}, "feature_unsupported"),
    ("feature-present", {"features": frozenset({"tools"})}, {"needs": ("tools",)}, {}, {},
     None),
    ("privacy_mismatch-no_training", {"trains_on_data": True}, {},
     {"privacy_tier": "no_training"}, {}, "privacy_mismatch"),
    ("no_training-ok-without-zdr", {"zdr": False}, {}, {"privacy_tier": "no_training"}, {},
     None),
    ("privacy_mismatch-zdr-tier", {"zdr": False}, {}, {"privacy_tier": "zdr"}, {},
     "privacy_mismatch"),
    ("privacy_mismatch-zdr-tier-trains", {"zdr": True, "trains_on_data": True}, {},
     {"privacy_tier": "zdr"}, {}, "privacy_mismatch"),
    ("privacy_mismatch-data_collection-deny", {"trains_on_data": True}, {},
     {"prefs": {"data_collection": "deny"}}, {}, "privacy_mismatch"),
    ("privacy_mismatch-prefs-zdr", {"zdr": False}, {}, {"prefs": {"zdr": True}}, {},
     "privacy_mismatch"),
    ("standard-tier-allows-training", {"trains_on_data": True, "zdr": False}, {}, {}, {}, None),
    ("region_excluded", {"regions": ("us",)}, {}, {"allowed_regions": ("eu",)}, {},
     "region_excluded"),
    ("region-intersects", {"regions": ("us", "eu")}, {}, {"allowed_regions": ("eu", "apac")},
     {}, None),
    ("region-global-allows-any", {"regions": ("us",)}, {}, {"allowed_regions": ("global",)},
     {}, None),
    ("provider_excluded-only", {}, {}, {"prefs": {"only": ("p2",)}}, {}, "provider_excluded"),
    ("provider-in-only", {}, {}, {"prefs": {"only": ("p2", "p1")}}, {}, None),
    ("provider_excluded-ignore", {}, {}, {"prefs": {"ignore": ("p1",)}}, {},
     "provider_excluded"),
    ("provider_excluded-test-mode", {}, {}, {}, {"test_mode": True}, "provider_excluded"),
    ("test-mode-sandbox-ok", {"provider": "sandbox"}, {}, {}, {"test_mode": True}, None),
    ("provider_not_configured-no-credentials", {}, {}, {},
     {"configured": frozenset({"p2", "sandbox"})}, "provider_not_configured"),
    ("provider_not_configured-provider-disabled", {"provider_enabled": False}, {}, {}, {},
     "provider_not_configured"),
    ("provider_not_configured-offering-disabled", {"enabled": False}, {}, {}, {},
     "provider_not_configured"),
    ("provider_unhealthy-health", {"health": 0.49}, {}, {}, {}, "provider_unhealthy"),
    ("health-at-threshold-ok", {"health": 0.5}, {}, {}, {}, None),
    ("provider_unhealthy-breaker", {"breaker_open": True}, {}, {}, {}, "provider_unhealthy"),
    ("sla_infeasible-priority", {"p90": 3601}, {}, {"sla_tier": "priority"}, {},
     "sla_infeasible"),
    ("priority-p90-at-window-ok", {"p90": 3600}, {}, {"sla_tier": "priority"}, {}, None),
    ("sla_infeasible-standard", {"p90": 24 * 3600 + 1}, {}, {}, {}, "sla_infeasible"),
    ("flex-window-48h-ok", {"p90": 24 * 3600 + 1}, {}, {"sla_tier": "flex"}, {}, None),
]


@pytest.mark.parametrize("lane_over, sig_over, ctl_over, ctx_over, code",
                         [row[1:] for row in REJECTION_TABLE],
                         ids=[row[0] for row in REJECTION_TABLE])
def test_lane_rejection_table(lane_over, sig_over, ctl_over, ctx_over, code):
    ln = lane(0, **lane_over)
    sig = {"operation": "responses", "models": ("chat",), "needs": ()} | sig_over
    ctx = context([ln], **ctx_over)
    got = routing.lane_rejection(ln, sig["operation"], sig["models"], sig["needs"],
                                 controls(**ctl_over), ctx)
    assert got == code
    if code is not None:
        assert routing.REASONS[code]  # every code has a human reason


def test_every_stable_code_has_a_reason():
    assert set(routing.REASONS) == {
        "operation_unsupported", "model_mismatch", "feature_unsupported", "privacy_mismatch",
        "region_excluded", "provider_excluded", "provider_not_configured",
        "provider_unhealthy", "sla_infeasible", "capacity_exceeded", "over_max_price",
        "higher_cost"}


# --- route(): rejection counts per lane ---------------------------------------------------

def test_route_counts_rejections_per_lane_and_per_item():
    ls = lanes({"provider": "p1"},                                 # chosen (cheapest)
               {"provider": "p2", "input_rate": 5_000_000},        # eligible, dearer
               {"provider": "p3", "health": 0.2},                  # unhealthy
               {"provider": "p1", "model": "embed"})               # another model's lane
    ctx = context(ls)
    items = [item(1), item(2), item(3)]
    result = routing.route(items, controls(), ctx)
    assert [c.lane for c in result.choices] == [0, 0, 0]
    assert result.stats[0].selected == 3 and result.stats[0].rejected == {}
    assert result.stats[1].rejected == {"higher_cost": 3}
    assert result.stats[2].rejected == {"provider_unhealthy": 3}
    # Lanes of models the item did not ask for are not part of its receipt.
    assert result.stats[3].rejected == {} and result.stats[3].selected == 0
    assert result.unroutable == []


def test_operation_unsupported_for_a_models_list_with_an_embeddings_model():
    ls = lanes({"model": "embed"}, {"model": "chat"})
    result = routing.route([item(1, models=("embed", "chat"))], controls(), context(ls))
    assert result.choices[0].lane == 1
    assert result.stats[0].rejected == {"operation_unsupported": 1}


def test_feature_unsupported_through_route():
    ls = lanes({"features": frozenset()}, {"features": frozenset({"tools"}),
                                           "input_rate": 9_000_000})
    result = routing.route([item(1, needs=("tools",))], controls(), context(ls))
    assert result.choices[0].lane == 1
    assert result.stats[0].rejected == {"feature_unsupported": 1}


def test_no_eligible_lane_makes_the_item_unroutable_with_per_lane_codes():
    ls = lanes({"provider": "p1", "trains_on_data": True}, {"provider": "p2", "zdr": False},
               {"provider": "p3", "breaker_open": True})
    it = item(1)
    result = routing.route([it], controls(privacy_tier="zdr"), context(ls))
    assert result.choices == [None]
    assert result.unroutable == [(it, {"p1/chat/sync": "privacy_mismatch",
                                       "p2/chat/sync": "privacy_mismatch",
                                       "p3/chat/sync": "provider_unhealthy"})]
    assert (result.low, result.expected, result.high) == (0, 0, 0)


# --- capacity ------------------------------------------------------------------------------

def test_capacity_overflow_moves_items_down_the_ladder():
    ls = lanes({"provider": "p1", "capacity": 2},
               {"provider": "p2", "input_rate": 3_000_000},
               {"provider": "p3", "input_rate": 9_000_000})
    ctx = context(ls)
    items = [item(n) for n in range(1, 6)]
    result = routing.route(items, controls(), ctx)
    assert [c.lane for c in result.choices] == [0, 0, 1, 1, 1]
    assert result.stats[0].rejected.get("capacity_exceeded") == 3
    assert result.stats[0].selected == 2 and result.stats[1].selected == 3
    moved = result.choices[2]
    # A moved item is priced on the lane it moved to, and its ladder no longer names that lane.
    assert moved.expected == expected_price(items[2], ls[1], ctx)
    assert 1 not in moved.ladder and 2 in moved.ladder
    assert result.expected == 2 * expected_price(items[0], ls[0], ctx) + \
        3 * expected_price(items[0], ls[1], ctx)
    assert result.unroutable == []


def test_capacity_overflow_receipt_does_not_reject_items_on_the_lane_they_moved_to():
    ls = lanes({"provider": "p1", "capacity": 2},
               {"provider": "p2", "input_rate": 3_000_000},
               {"provider": "p3", "input_rate": 9_000_000})
    result = routing.route([item(n) for n in range(1, 6)], controls(), context(ls))
    assert result.stats[1].selected == 3
    assert result.stats[1].rejected.get("higher_cost", 0) == 2  # only the 2 items on lane 0
    assert result.stats[2].rejected.get("higher_cost", 0) == 5


def test_capacity_overflow_without_fallbacks_leaves_items_unroutable():
    ls = lanes({"provider": "p1", "capacity": 1}, {"provider": "p2", "input_rate": 3_000_000})
    items = [item(1), item(2)]
    result = routing.route(items, controls(prefs={"allow_fallbacks": False}), context(ls))
    assert result.choices[0].lane == 0 and result.choices[0].ladder == ()
    assert result.choices[1] is None
    assert result.unroutable == [(items[1], {"p1/chat/sync": "capacity_exceeded"})]
    assert result.stats[0].rejected["capacity_exceeded"] == 1


def test_zero_capacity_means_unlimited():
    ls = lanes({"capacity": 0})
    result = routing.route([item(n) for n in range(50)], controls(), context(ls))
    assert result.stats[0].selected == 50


# --- routing modes -------------------------------------------------------------------------

def test_cheapest_picks_the_lowest_expected_price():
    ls = lanes({"provider": "p1", "output_rate": 3_000_000},
               {"provider": "p2", "output_rate": 1_000_000},
               {"provider": "p3", "output_rate": 2_000_000})
    ctx = context(ls)
    choice = routing.route([item(1)], controls(), ctx).choices[0]
    assert choice.lane == 1
    assert choice.ladder == (2, 0)  # the rest, best first
    assert choice.expected == expected_price(item(1), ls[1], ctx)


def test_cheapest_counts_the_batch_discount():
    ls = lanes({"provider": "p1", "mode": "sync", "input_rate": 1_000_000},
               {"provider": "p1", "mode": "batch", "input_rate": 1_500_000,
                "output_rate": 3_000_000, "discount_ppm": 500_000})
    assert routing.route([item(1)], controls(), context(ls)).choices[0].lane == 1


def test_cheapest_ties_go_to_higher_health_then_catalog_order():
    ls = lanes({"provider": "p1", "health": 0.8}, {"provider": "p2", "health": 0.95},
               {"provider": "p3", "health": 0.95})
    choice = routing.route([item(1)], controls(), context(ls)).choices[0]
    assert choice.lane == 1 and choice.ladder == (2, 0)
    same = lanes({"provider": "p2"}, {"provider": "p1"}, {"provider": "p3"})
    assert routing.route([item(1)], controls(), context(same)).choices[0].lane == 0


def test_sla_aware_prefers_the_cheapest_lane_within_half_the_window():
    # standard: 24 h window, half = 12 h = 43,200 s
    ls = lanes({"provider": "p1", "p90": 50_000},                         # cheapest, too slow
               {"provider": "p2", "p90": 43_200, "input_rate": 2_000_000},  # fits, cheaper
               {"provider": "p3", "p90": 60, "input_rate": 4_000_000})      # fits, dearer
    result = routing.route([item(1)], controls(routing_mode="sla_aware"), context(ls))
    assert result.choices[0].lane == 1
    assert result.stats[0].rejected == {"higher_cost": 1}


def test_sla_aware_falls_back_to_the_lowest_p90():
    ls = lanes({"provider": "p1", "p90": 80_000},
               {"provider": "p2", "p90": 50_000, "input_rate": 9_000_000},
               {"provider": "p3", "p90": 70_000, "input_rate": 2_000_000})
    choice = routing.route([item(1)], controls(routing_mode="sla_aware"),
                           context(ls)).choices[0]
    assert choice.lane == 1


def test_sla_aware_uses_the_tier_window():
    ls = lanes({"provider": "p1", "p90": 1_900},                          # > 30 min
               {"provider": "p2", "p90": 1_700, "input_rate": 5_000_000})  # fits half of 1 h
    choice = routing.route([item(1)], controls(routing_mode="sla_aware", sla_tier="priority"),
                           context(ls)).choices[0]
    assert choice.lane == 1
    choice = routing.route([item(1)], controls(routing_mode="sla_aware", sla_tier="standard"),
                           context(ls)).choices[0]
    assert choice.lane == 0


def test_quality_picks_the_highest_prior_even_when_dearer():
    ls = lanes({"provider": "p1", "quality": 0.7},
               {"provider": "p2", "quality": 0.9, "input_rate": 9_000_000},
               {"provider": "p3", "quality": 0.8})
    choice = routing.route([item(1)], controls(routing_mode="quality"), context(ls)).choices[0]
    assert choice.lane == 1 and choice.ladder == (2, 0)


def test_quality_ties_go_to_the_cheaper_lane():
    ls = lanes({"provider": "p1", "quality": 0.9, "input_rate": 4_000_000},
               {"provider": "p2", "quality": 0.9, "input_rate": 2_000_000})
    choice = routing.route([item(1)], controls(routing_mode="quality"), context(ls)).choices[0]
    assert choice.lane == 1


def test_quality_uses_feedback_scores_over_the_prior():
    ls = lanes({"provider": "p1", "quality": 0.9}, {"provider": "p2", "quality": 0.6})
    ctx = context(ls, quality={("p2", "chat"): 0.95})
    assert routing.route([item(1)], controls(routing_mode="quality"), ctx).choices[0].lane == 1


def test_hybrid_prefers_lanes_with_health_at_least_0_9():
    ls = lanes({"provider": "p1", "health": 0.89},
               {"provider": "p2", "health": 0.9, "input_rate": 5_000_000},
               {"provider": "p3", "health": 1.0, "input_rate": 7_000_000})
    choice = routing.route([item(1)], controls(routing_mode="hybrid"), context(ls)).choices[0]
    assert choice.lane == 1 and choice.ladder == (2, 0)
    # Under cheapest the same lanes go to the cheap, less healthy one.
    assert routing.route([item(1)], controls(), context(ls)).choices[0].lane == 0


def test_hybrid_with_no_healthy_enough_lane_takes_the_cheapest():
    ls = lanes({"provider": "p1", "health": 0.6, "input_rate": 5_000_000},
               {"provider": "p2", "health": 0.7})
    assert routing.route([item(1)], controls(routing_mode="hybrid"),
                         context(ls)).choices[0].lane == 1


def test_models_list_routes_across_all_acceptable_models():
    ls = lanes({"model": "chat", "input_rate": 3_000_000}, {"model": "chat2"})
    it = item(1, models=("chat", "chat2"))
    result = routing.route([it], controls(), context(ls))
    assert result.choices[0].lane == 1 and result.choices[0].ladder == (0,)


def test_models_list_order_breaks_price_ties():
    same = pricing.ModelSizing("openai", 4000, 500, False)
    ctx = context(lanes({"model": "a"}, {"model": "b"}), sizing={"a": same, "b": same},
                  model_operations={"a": ("responses",), "b": ("responses",)})
    assert routing.route([item(1, models=("a", "b"))], controls(), ctx).choices[0].lane == 0
    assert routing.route([item(1, models=("b", "a"))], controls(), ctx).choices[0].lane == 1


# --- fallback ladders ----------------------------------------------------------------------

def test_ladder_holds_only_eligible_lanes_in_rank_order():
    ls = lanes({"provider": "p1"}, {"provider": "p2", "breaker_open": True},
               {"provider": "p3", "input_rate": 3_000_000},
               {"provider": "sandbox", "input_rate": 2_000_000})
    choice = routing.route([item(1)], controls(), context(ls)).choices[0]
    assert choice.lane == 0 and choice.ladder == (3, 2)


def test_allow_fallbacks_false_gives_an_empty_ladder():
    ls = lanes({"provider": "p1"}, {"provider": "p2"}, {"provider": "p3"})
    choice = routing.route([item(1)], controls(prefs={"allow_fallbacks": False}),
                           context(ls)).choices[0]
    assert choice.lane == 0 and choice.ladder == ()


def test_provider_order_preference_breaks_price_ties():
    ls = lanes({"provider": "p1"}, {"provider": "p2"})
    choice = routing.route([item(1)], controls(prefs={"order": ("p2", "p1")}),
                           context(ls)).choices[0]
    assert choice.lane == 1 and choice.ladder == (0,)


# --- over_max_price (through quotes.create_quote) -----------------------------------------

@pytest.fixture
def workspace(session, seeded_catalog):
    return workspace_of(session, make_user(session))


def _create(session, workspace, items, ctl, mode="live", credentials=None):
    return create_quote(session, quotes.Settings(credentials=credentials or {}),
                        workspace_id=workspace, mode=mode, items=items, controls=ctl)


def test_over_max_price_raises_with_cheapest_high_total(session, workspace):
    items = [chat(f"i{n}", content="x" * 2000) for n in range(3)]
    free = _create(session, workspace, items, controls())
    high = free.high_micros
    session.rollback()
    with pytest.raises(quotes.QuoteRejected) as info:
        _create(session, workspace, items, controls(max_price=high - 1))
    exc = info.value
    assert exc.code == "over_max_price" and exc.status == 422
    assert exc.details["high_total"] == money.to_wire(high)
    assert exc.details["cheapest_high_total"] == exc.details["high_total"]
    assert exc.details["cheapest_fits"] is False
    session.rollback()
    accepted = _create(session, workspace, items, controls(max_price=high))
    assert accepted.high_micros == high  # the cap is inclusive


def test_over_max_price_says_when_the_cheapest_lanes_would_fit(session, workspace):
    # Quality mode picks gpt-4o (prior 0.86) over gpt-4o-mini (0.74); the cap fits only mini.
    item_ = chat("a", content="y" * 4000)
    del item_["model"]
    item_["models"] = ["gpt-4o-mini", "gpt-4o"]
    creds = {"OPENAI_API_KEY": "sk-test"}
    cheapest = _create(session, workspace, [item_], controls(), credentials=creds)
    session.rollback()
    best = _create(session, workspace, [item_], controls(routing_mode="quality"),
                   credentials=creds)
    session.rollback()
    assert best.high_micros > cheapest.high_micros
    with pytest.raises(quotes.QuoteRejected) as info:
        _create(session, workspace, [item_], controls(routing_mode="quality",
                                                      max_price=cheapest.high_micros),
                credentials=creds)
    details = info.value.details
    assert info.value.code == "over_max_price"
    assert details["cheapest_fits"] is True
    assert details["cheapest_high_total"] == money.to_wire(cheapest.high_micros)
    assert details["high_total"] == money.to_wire(best.high_micros)
    assert details["max_price"] == money.to_wire(cheapest.high_micros)


def test_configured_set_comes_from_credentials(session, workspace):
    ctx = quotes.build_context(session, quotes.Settings(credentials={"OPENAI_API_KEY": "sk"}),
                               test_mode=False)
    assert ctx.configured == frozenset({"openai", "sandbox"})
    ctx = quotes.build_context(session, quotes.Settings(credentials={}), test_mode=True)
    assert ctx.configured == frozenset({"sandbox"}) and ctx.test_mode is True
