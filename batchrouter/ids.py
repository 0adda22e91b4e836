"""Prefixed, sortable, random identifiers (SPEC §2): `bat_01hx…`."""
from __future__ import annotations

import base64
import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
# RFC 4648 base32 (C speed) re-spelled in Crockford's alphabet, which keeps byte order.
_FROM_RFC = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())

PREFIXES = {
    "org", "usr", "key", "qlock", "bat", "wu", "itm", "att", "file", "evt", "whd", "led",
    "rsv", "prq", "ses", "err", "eml", "sec", "obx", "lot", "txn", "inv",
}


def new_id(prefix: str) -> str:
    """`prefix_` + 26 characters: 48 bits of milliseconds then 80 random bits (sortable)."""
    return new_ids(prefix, 1)[0]


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` ids of one type at once: 48 bits of milliseconds + 80 random bits each, in
    26 characters, sortable like new_id's (for bulk inserts)."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    millis = (time.time_ns() // 1_000_000).to_bytes(6, "big")
    randomness = os.urandom(10 * count)
    head = f"{prefix}_"
    return [head + base64.b32encode(millis + randomness[i:i + 10]).translate(_FROM_RFC)
            .decode()[:26] for i in range(0, 10 * count, 10)]


def has_prefix(value: str, prefix: str) -> bool:
    """True when `value` looks like an id of the given type."""
    return isinstance(value, str) and value.startswith(prefix + "_") and len(value) == len(prefix) + 27
