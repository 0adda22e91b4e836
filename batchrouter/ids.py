"""Prefixed, sortable, random identifiers (SPEC §2): `bat_01hx…`."""
from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case

PREFIXES = {
    "org", "usr", "key", "qlock", "bat", "wu", "itm", "att", "file", "evt", "whd", "led",
    "rsv", "prq", "ses", "err", "eml", "sec", "obx", "lot", "txn", "inv",
}


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """Return `prefix_` + 10 chars of millisecond time + 16 chars of randomness (sortable)."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_encode(millis, 10)}{_encode(rand, 16)}"


def has_prefix(value: str, prefix: str) -> bool:
    """True when `value` looks like an id of the given type."""
    return isinstance(value, str) and value.startswith(prefix + "_") and len(value) == len(prefix) + 27
