"""Hand-built lanes, contexts and items for the routing unit tests (no Flask, no database)."""
from __future__ import annotations

from dataclasses import replace

from batchrouter import pricing, routing
from batchrouter.catalog import Lane
from batchrouter.manifest import ItemSummary

ALL_FEATURES = frozenset({"tools", "structured_output", "vision"})
SIZING = {"chat": pricing.ModelSizing("openai", 4000, 500, False),
          "chat2": pricing.ModelSizing("anthropic", 8000, 300, False),
          "embed": pricing.ModelSizing("openai", 0, 0, True)}
OPERATIONS = {"chat": ("responses", "vision"), "chat2": ("responses",),
              "embed": ("embeddings",)}
PROVIDERS = frozenset({"p1", "p2", "p3", "sandbox"})


def lane(index: int = 0, provider: str = "p1", model: str = "chat", mode: str = "sync",
         **overrides) -> Lane:
    """A healthy, configured, private, global lane at $1 in / $2 out per million tokens."""
    values = {"index": index, "offering_id": index + 1, "provider": provider, "model": model, "mode": mode,
                  "provider_model_id": model, "input_rate": 1_000_000, "output_rate": 2_000_000,
                  "discount_ppm": 0, "trains_on_data": False, "zdr": True, "regions": ("global",),
                  "features": ALL_FEATURES, "p50": 60, "p90": 600, "capacity": 0, "quality": 0.5, "health": 1.0,
                  "enabled": True, "provider_enabled": True, "breaker_open": False, "position": index}
    values.update(overrides)
    return Lane(**values)


def lanes(*specs: dict) -> list[Lane]:
    """Lanes from override dicts, indexed and positioned in the order given."""
    return [lane(i, **spec) for i, spec in enumerate(specs)]


def context(lane_list, **overrides) -> routing.Context:
    values = {"lanes": list(lane_list), "sizing": SIZING, "model_operations": OPERATIONS,
                  "configured": PROVIDERS}
    values.update(overrides)
    return routing.Context(**values)


def item(n: int = 1, operation: str = "responses", models=("chat",), chars: int = 400,
         messages: int = 1, images: int = 0, cap: int | None = None, needs=()) -> ItemSummary:
    return ItemSummary(n, f"item-{n}", operation, tuple(models), chars, messages, images, cap,
                       tuple(needs))


def controls(**overrides) -> routing.Controls:
    prefs = overrides.pop("prefs", None)
    base = routing.Controls(**overrides)
    return replace(base, preferences=routing.Preferences(**prefs)) if prefs else base


def figures(it: ItemSummary, ln: Lane, ctx: routing.Context) -> tuple[int, int, int]:
    """(low, expected, high) totals of an item on a lane, straight from pricing.py."""
    sizing = ctx.sizing[ln.model]
    tokens_in = pricing.input_tokens(it.input_chars, it.messages, it.images, sizing.family)
    out = []
    for tokens_out in pricing.output_tokens(it.max_output_tokens, sizing):
        sub, fee = pricing.price(tokens_in, tokens_out, ln.input_rate, ln.output_rate,
                                 ln.discount_ppm, ctx.fee_ppm)
        out.append(sub + fee)
    return tuple(out)


def expected_price(it: ItemSummary, ln: Lane, ctx: routing.Context) -> int:
    """The `expected` total of an item on a lane (the oracle routing must agree with)."""
    return figures(it, ln, ctx)[1]
