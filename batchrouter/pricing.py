"""Token estimates and per-item prices in integer micro-dollars (SPEC §4).

Input tokens: characters ÷ 4, corrected per model family (tokenizers differ), plus a few
tokens per message and a fixed cost per image. Output tokens: `low` = 10 % of the item's
output cap (at most `expected`), `expected` = the model's typical output (or half the cap), `high` = the cap
(`max_output_tokens`, else the model's max output). Settlement later uses provider-reported
usage; these figures only size the quote and the reservation.
"""
from __future__ import annotations

from dataclasses import dataclass

# Tokens per 1,000 characters ÷ 250 (the chars/4 baseline), per model family, in per-mille.
FAMILY_CORRECTION = {"openai": 1000, "anthropic": 1080, "llama": 1050, "deepseek": 1000,
                     "sandbox": 1000}
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REQUEST = 3
TOKENS_PER_IMAGE = 765
MTOK = 1_000_000
PPM = 1_000_000
DEFAULT_FEE_PPM = 59_000  # 5.90 % of the provider subtotal


@dataclass(frozen=True)
class ModelSizing:
    family: str
    max_output: int
    typical_output: int
    embeddings: bool


def input_tokens(chars: int, messages: int, images: int, family: str) -> int:
    """The documented heuristic: ceil(chars / 4 × family correction) + overheads."""
    correction = FAMILY_CORRECTION.get(family, 1000)
    text = -(-chars * correction // 4000)  # ceil without floats
    overhead = (TOKENS_PER_REQUEST + TOKENS_PER_MESSAGE * messages) if messages else 0
    return text + overhead + TOKENS_PER_IMAGE * images


def output_tokens(cap: int | None, sizing: ModelSizing) -> tuple[int, int, int]:
    """(low, expected, high) output tokens for one item on one model."""
    if sizing.embeddings:
        return 0, 0, 0
    high = min(cap, sizing.max_output) if cap else sizing.max_output
    expected = min(sizing.typical_output, high) if sizing.typical_output else high // 2
    # 10 % of the cap, but never above `expected`: with a large cap and a short typical
    # answer the literal rule would put `low` above `expected`.
    low = min(-(-high // 10), expected)
    return low, expected, high


def subtotal(tokens_in: int, tokens_out: int, input_rate: int, output_rate: int,
             discount_ppm: int) -> int:
    """Provider cost in micro-dollars, batch discount applied, rounded half up."""
    numerator = (tokens_in * input_rate + tokens_out * output_rate) * (PPM - discount_ppm)
    denominator = MTOK * PPM
    return (2 * numerator + denominator) // (2 * denominator)


def fee(provider_subtotal: int, fee_ppm: int) -> int:
    """Our service fee on a provider subtotal, rounded half up."""
    return (2 * provider_subtotal * fee_ppm + PPM) // (2 * PPM)


def price(tokens_in: int, tokens_out: int, input_rate: int, output_rate: int,
          discount_ppm: int, fee_ppm: int) -> tuple[int, int]:
    """(provider subtotal, fee) for one item on one lane."""
    sub = subtotal(tokens_in, tokens_out, input_rate, output_rate, discount_ppm)
    return sub, fee(sub, fee_ppm)
