"""Micro-dollar arithmetic: integers inside, decimal strings on the wire (SPEC §2)."""
from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICROS = 1_000_000
# Plain decimals only: no exponents, no thousands separators, no "NaN"/"Infinity".
_DECIMAL = re.compile(r"^-?\d{1,15}(\.\d+)?$")


class MoneyFormatError(ValueError):
    """A decimal string that is not a valid non-negative amount."""


def to_wire(micros: int) -> str:
    """Format micro-dollars as a 6-decimal string: 2413700 -> "2.413700"."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(int(micros)), MICROS)
    return f"{sign}{whole}.{frac:06d}"


def to_display(micros: int) -> str:
    """Human format with two decimals and a dollar sign, rounded half up."""
    cents = (Decimal(int(micros)) / 10_000).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(int(cents)), 100)
    return f"{sign}${whole:,}.{frac:02d}"


def parse(amount: str | int | Decimal, *, allow_negative: bool = False) -> int:
    """Parse "12.50" (at most 6 decimals) into micro-dollars; never through a float."""
    if isinstance(amount, float):
        raise MoneyFormatError("amounts must be decimal strings, not floats")
    text = str(amount).strip()
    if not _DECIMAL.match(text):
        raise MoneyFormatError(f"not a plain decimal amount: {text[:40]!r}")
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise MoneyFormatError(f"not a decimal amount: {amount!r}") from exc
    if not value.is_finite() or (value < 0 and not allow_negative):
        raise MoneyFormatError(f"not a valid amount: {amount!r}")
    scaled = value * MICROS
    if scaled != scaled.to_integral_value():
        raise MoneyFormatError("at most 6 decimal places")
    return int(scaled)


def round_half_up(value: Decimal) -> int:
    """Round a Decimal amount of micro-dollars to an integer, half up."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))
