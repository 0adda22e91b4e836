"""Argon2id password hashing with the OWASP minimum parameters (m=19 MiB, t=2, p=1)."""
from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from batchrouter.errors import ValidationFailed

HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
MIN_LENGTH, MAX_LENGTH = 8, 1024
# Compared against when the account does not exist, so both paths cost one argon2 verify.
_DUMMY_HASH = HASHER.hash("not-a-real-password-used-for-timing")
COMMON = {"password", "12345678", "123456789", "1234567890", "qwertyuiop", "password1",
          "iloveyou", "11111111", "00000000", "abc12345", "qwerty123", "letmein1",
          "welcome1", "admin123", "batchrouter"}


def check_policy(password: str) -> None:
    """ASVS 6.2: length 8–1024, any characters, no composition rules, not a common password."""
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        raise ValidationFailed(f"Use at least {MIN_LENGTH} characters.", code="weak_password")
    if len(password) > MAX_LENGTH:
        raise ValidationFailed("That password is too long.", code="weak_password")
    if password.lower() in COMMON:
        raise ValidationFailed("That password is too common; choose another.",
                               code="weak_password")


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """True when `password` matches; spends the same work when there is no stored hash."""
    try:
        return HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return HASHER.check_needs_rehash(stored)
