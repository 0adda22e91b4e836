"""The routing engine (SPEC §4): expand items into lanes, filter, price, select, explain.

Plain functions over plain data: `catalog.Lane`s, `manifest.ItemSummary`s and `Controls`.
Eligibility depends only on an item's signature (operation, models, needed features), so it
is computed once per signature; prices depend on each item's size, so they are computed per
item on its eligible lanes (integer arithmetic only).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter

import msgspec

from batchrouter import pricing
from batchrouter.catalog import Lane

SLA_WINDOWS = {"standard": 24 * 3600, "flex": 48 * 3600, "priority": 3600}
ROUTING_MODES = ("cheapest", "sla_aware", "quality", "hybrid")
PRIVACY_TIERS = ("standard", "no_training", "zdr")
HEALTHY, HYBRID_HEALTH = 0.5, 0.9
SYNC_UNIT, SANDBOX_UNIT = 1000, 1000

REASONS = {
    "operation_unsupported": "The model does not support this operation.",
    "model_mismatch": "The lane serves a model the item did not ask for.",
    "feature_unsupported": "The lane lacks a feature the item needs (tools, structured output "
                           "or vision).",
    "privacy_mismatch": "The lane's data policy does not meet the privacy requirement.",
    "region_excluded": "The lane is not served in an allowed region.",
    "provider_excluded": "Provider preferences (or a test-mode key) exclude this provider.",
    "provider_not_configured": "The provider has no credentials here or is disabled.",
    "provider_unhealthy": "The provider is unhealthy (health below 0.5 or circuit open).",
    "sla_infeasible": "The lane's p90 turnaround exceeds the SLA window.",
    "capacity_exceeded": "The lane's capacity for one batch is used up.",
    "over_max_price": "Choosing it would exceed max_price.",
    "higher_cost": "Eligible, but another lane ranked better.",
}


@dataclass(frozen=True)
class Preferences:
    only: tuple = ()
    ignore: tuple = ()
    order: tuple = ()
    allow_fallbacks: bool = True
    data_collection: str = "allow"  # "deny" = only lanes that do not train on data
    zdr: bool = False


@dataclass(frozen=True)
class Controls:
    sla_tier: str = "standard"
    routing_mode: str = "cheapest"
    privacy_tier: str = "standard"
    allowed_regions: tuple = ("global",)
    preferences: Preferences = field(default_factory=Preferences)
    max_price: int | None = None  # micro-dollars, compared with the `high` total

    @property
    def window(self) -> int:
        return SLA_WINDOWS[self.sla_tier]


@dataclass(frozen=True)
class Context:
    """What the engine needs besides items and controls."""

    lanes: list[Lane]
    sizing: dict[str, pricing.ModelSizing]
    model_operations: dict[str, tuple]
    configured: frozenset  # provider slugs with credentials
    test_mode: bool = False
    fee_ppm: int = pricing.DEFAULT_FEE_PPM
    # (provider, model) -> quality score from feedback, where there is enough of it.
    quality: dict = field(default_factory=dict)


def lane_rejection(lane: Lane, operation: str, models: tuple, needs: tuple,
                   controls: Controls, ctx: Context) -> str | None:
    """The first rule of SPEC §4 this lane fails for an item of this signature, or None."""
    if lane.model not in models:
        return "model_mismatch"
    if operation not in ctx.model_operations.get(lane.model, ()):
        return "operation_unsupported"
    if not set(needs) <= lane.features:
        return "feature_unsupported"
    prefs = controls.preferences
    if (ctx.test_mode and lane.provider != "sandbox") or \
            (prefs.only and lane.provider not in prefs.only) or lane.provider in prefs.ignore:
        return "provider_excluded"
    if not (lane.enabled and lane.provider_enabled and lane.provider in ctx.configured):
        return "provider_not_configured"
    no_training = controls.privacy_tier in ("no_training", "zdr") or \
        prefs.data_collection == "deny"
    needs_zdr = controls.privacy_tier == "zdr" or prefs.zdr
    if (no_training and lane.trains_on_data) or (needs_zdr and not lane.zdr):
        return "privacy_mismatch"
    if "global" not in controls.allowed_regions and \
            not set(controls.allowed_regions) & set(lane.regions):
        return "region_excluded"
    if lane.health < HEALTHY or lane.breaker_open:
        return "provider_unhealthy"
    if lane.p90 > controls.window:
        return "sla_infeasible"
    return None


class Choice(msgspec.Struct, array_like=True, gc=False):
    """The lane chosen for one item, its three figures (with fee) and its fallback ladder."""

    lane: int
    low: int
    expected: int
    high: int
    subtotal: int  # provider subtotal of the expected figure
    fee: int
    ladder: tuple


@dataclass
class LaneStats:
    selected: int = 0
    expected: int = 0
    high: int = 0
    rejected: dict = field(default_factory=dict)  # code -> item count


@dataclass
class Routing:
    choices: list  # Choice per item, None where no lane was eligible
    stats: dict  # lane index -> LaneStats
    unroutable: list  # (item, {lane name: code})
    low: int = 0
    expected: int = 0
    high: int = 0
    subtotal: int = 0
    fee: int = 0
    cheapest_high: int = 0


def _figures(item, lane: Lane, ctx: Context) -> tuple:
    """[(total, subtotal, fee)] for low, expected, high of one item on one lane."""
    sizing = ctx.sizing[lane.model]
    tokens_in = pricing.input_tokens(item.input_chars, item.messages, item.images, sizing.family)
    out = []
    for tokens_out in pricing.output_tokens(item.max_output_tokens, sizing):
        sub, fee = pricing.price(tokens_in, tokens_out, lane.input_rate, lane.output_rate,
                                 lane.discount_ppm, ctx.fee_ppm)
        out.append((sub + fee, sub, fee))
    return out


class _Candidate:
    """An eligible lane with what ranking and pricing need, computed once per signature."""

    __slots__ = ("a", "b", "family", "lane", "outs", "post", "pre", "sizing")

    def __init__(self, lane: Lane, ctx: Context, controls: Controls, models: tuple):
        self.lane = lane
        self.sizing = ctx.sizing[lane.model]
        self.family = self.sizing.family
        discount = pricing.PPM - lane.discount_ppm
        self.a, self.b = lane.input_rate * discount, lane.output_rate * discount
        order = controls.preferences.order
        rank = order.index(lane.provider) if lane.provider in order else len(order)
        # Ties: higher health, then the item's own model order (SPEC §3), then provider
        # preference order, then catalog order.
        self.post = (-lane.health, models.index(lane.model), rank, lane.position)
        self.pre = _rank_prefix(lane, controls, ctx)
        self.outs: dict = {}  # output cap -> (low, expected, high) tokens


def _rank_prefix(lane: Lane, controls: Controls, ctx: Context) -> tuple:
    """What ranks before the expected price under each routing mode (SPEC §4)."""
    mode = controls.routing_mode
    if mode == "sla_aware":  # lanes fitting half the window first (cheapest), then lowest p90
        return (0, 0) if lane.p90 <= controls.window // 2 else (1, lane.p90)
    if mode == "quality":
        return (-ctx.quality.get((lane.provider, lane.model), lane.quality),)
    if mode == "hybrid":
        return (lane.health < HYBRID_HEALTH,)
    return ()


_DENOM = pricing.MTOK * pricing.PPM


def route(items: list, controls: Controls, ctx: Context) -> Routing:
    """Select a lane per item with its fallback ladder, and total the quote.

    Integer arithmetic inlined from pricing.py: this loop runs items × lanes times."""
    candidates_by_signature: dict = {}
    stats = {lane.index: LaneStats() for lane in ctx.lanes}
    result = Routing(choices=[], stats=stats, unroutable=[])
    fee_ppm, ppm2 = ctx.fee_ppm, 2 * pricing.PPM
    denom2 = 2 * _DENOM
    want_cheapest_high = controls.max_price is not None
    fallbacks = controls.preferences.allow_fallbacks
    higher = {}
    for item in items:
        signature = (item.operation, item.models, item.needs)
        found = candidates_by_signature.get(signature)
        if found is None:
            eligible, rejected = _verdicts(signature, controls, ctx)
            found = candidates_by_signature[signature] = (
                [_Candidate(lane, ctx, controls, item.models) for lane in eligible], rejected)
        candidates, rejected = found
        for index, code in rejected:
            bucket = stats[index].rejected
            bucket[code] = bucket.get(code, 0) + 1
        if not candidates:
            result.choices.append(None)
            result.unroutable.append((item, {ctx.lanes[i].name: c for i, c in rejected}))
            continue
        chars, messages, images, cap = (item.input_chars, item.messages, item.images,
                                        item.max_output_tokens)
        tokens_in_by_family: dict = {}
        ranked = []
        for cand in candidates:
            tin = tokens_in_by_family.get(cand.family)
            if tin is None:
                tin = tokens_in_by_family[cand.family] = pricing.input_tokens(
                    chars, messages, images, cand.family)
            outs = cand.outs.get(cap)
            if outs is None:
                outs = cand.outs[cap] = pricing.output_tokens(cap, cand.sizing)
            sub = (2 * (tin * cand.a + outs[1] * cand.b) + _DENOM) // denom2
            fee = (2 * sub * fee_ppm + pricing.PPM) // ppm2
            ranked.append(((cand.pre, sub + fee, cand.post), cand, tin, outs, sub, fee))
        if len(ranked) > 1:
            ranked.sort(key=itemgetter(0))
        _key, best, tin, outs, sub, fee = ranked[0]
        low = _total(tin, outs[0], best, fee_ppm, ppm2, denom2)
        high = _total(tin, outs[2], best, fee_ppm, ppm2, denom2)
        ladder = tuple(r[1].lane.index for r in ranked[1:]) if fallbacks else ()
        result.choices.append(Choice(best.lane.index, low, sub + fee, high, sub, fee, ladder))
        if want_cheapest_high:
            result.cheapest_high += min(_total(r[2], r[3][2], r[1], fee_ppm, ppm2, denom2)
                                        for r in ranked)
        for r in ranked[1:]:
            index = r[1].lane.index
            higher[index] = higher.get(index, 0) + 1
    for index, count in higher.items():
        stats[index].rejected["higher_cost"] = count
    _apply_capacity(items, result, controls, ctx)
    _add_totals(result)
    return result


def _total(tokens_in: int, tokens_out: int, cand: _Candidate, fee_ppm: int, ppm2: int,
           denom2: int) -> int:
    sub = (2 * (tokens_in * cand.a + tokens_out * cand.b) + _DENOM) // denom2
    return sub + (2 * sub * fee_ppm + pricing.PPM) // ppm2


def _verdicts(signature, controls: Controls, ctx: Context):
    operation, models, needs = signature
    eligible, rejected = [], []
    for lane in ctx.lanes:
        if lane.model not in models:
            continue  # lanes of other models are not this item's business (model_mismatch)
        code = lane_rejection(lane, operation, models, needs, controls, ctx)
        if code is None:
            eligible.append(lane)
        else:
            rejected.append((lane.index, code))
    return eligible, rejected


def _apply_capacity(items, result: Routing, controls: Controls, ctx: Context) -> None:
    """Move items beyond a lane's per-batch capacity down their ladder."""
    lanes = ctx.lanes
    used: dict[int, int] = {}
    for position, (item, choice) in enumerate(zip(items, result.choices)):
        if choice is None:
            continue
        for candidate in (choice.lane,) + choice.ladder:
            cap = lanes[candidate].capacity
            if not cap or used.get(candidate, 0) < cap:
                break
            bucket = result.stats[candidate].rejected
            bucket["capacity_exceeded"] = bucket.get("capacity_exceeded", 0) + 1
            if candidate != choice.lane:  # counted as higher_cost before it turned out full
                _uncount(bucket, "higher_cost")
        else:
            candidate = None
        if candidate is None:
            result.unroutable.append((item, {lanes[choice.lane].name: "capacity_exceeded"}))
            result.choices[position] = None
            continue
        used[candidate] = used.get(candidate, 0) + 1
        if candidate != choice.lane:
            _uncount(result.stats[candidate].rejected, "higher_cost")
            figs = _figures(item, lanes[candidate], ctx)
            ladder = tuple(i for i in choice.ladder if i != candidate)
            choice.lane, choice.ladder = candidate, ladder
            choice.low, choice.expected, choice.high = figs[0][0], figs[1][0], figs[2][0]
            choice.subtotal, choice.fee = figs[1][1], figs[1][2]


def _uncount(bucket: dict, code: str) -> None:
    bucket[code] -= 1
    if not bucket[code]:
        del bucket[code]


def _add_totals(result: Routing) -> None:
    for choice in result.choices:
        if choice is None:
            continue
        result.low += choice.low
        result.expected += choice.expected
        result.high += choice.high
        result.subtotal += choice.subtotal
        result.fee += choice.fee
        stat = result.stats[choice.lane]
        stat.selected += 1
        stat.expected += choice.expected
        stat.high += choice.high


def unit_size(lane: Lane, max_batch_items: int) -> int:
    """Items per work unit: one provider batch on native lanes, a chunk on sync lanes."""
    if lane.provider == "sandbox":
        return SANDBOX_UNIT
    if lane.mode == "batch" and max_batch_items:
        return max_batch_items
    return SYNC_UNIT
