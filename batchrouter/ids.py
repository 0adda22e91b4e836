"""Prefixed, sortable, random identifiers (SPEC §2): `bat_01hx…`."""
from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
# Any byte → the base32 digit of its low five bits (256 is a multiple of 32, so random bytes
# give uniform digits); bytes.translate does it at C speed for a whole run of ids.
_DIGIT = bytes.maketrans(bytes(range(256)), bytes(_ALPHABET[b & 31].encode()[0]
                                                  for b in range(256)))
# The tenth digit carries the last three bits of the milliseconds and two random bits.
_TENTH = [bytes.maketrans(bytes(range(256)), bytes((m << 2) | (b & 3) for b in range(256)))
          for m in range(8)]

PREFIXES = {
    "org", "usr", "key", "qlock", "bat", "wu", "itm", "att", "file", "evt", "whd", "led",
    "rsv", "prq", "ses", "err", "eml", "sec", "obx", "lot", "txn", "inv", "cns", "vis", "sup",
    "pur", "whe", "wha",
}


def new_id(prefix: str) -> str:
    """`prefix_` + 26 characters: 48 bits of milliseconds then 82 random bits (sortable)."""
    return new_ids(prefix, 1)[0]


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` ids of one type at once (for bulk inserts), each like new_id's: 48 bits of
    milliseconds then 82 random bits, in 26 base32 digits."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    millis = time.time_ns() // 1_000_000
    head = f"{prefix}_" + "".join(_ALPHABET[(millis >> shift) & 31]
                                  for shift in range(43, 2, -5))
    raw = bytearray(os.urandom(17 * count))
    raw[0::17] = raw[0::17].translate(_TENTH[millis & 7])
    digits = raw.translate(_DIGIT).decode()
    return [head + digits[i:i + 17] for i in range(0, 17 * count, 17)]


def has_prefix(value: str, prefix: str) -> bool:
    """True when `value` looks like an id of the given type."""
    return isinstance(value, str) and value.startswith(prefix + "_") and len(value) == len(prefix) + 27
