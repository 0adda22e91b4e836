"""Secrets we must read back in clear (provider API keys, webhook signing secrets), sealed at
rest: Fernet with a key derived from SECRET_KEY by HKDF, one derived key per purpose, so a
database dump alone reveals none of them. Changing SECRET_KEY makes them unreadable: they
must be entered (or rotated) again.
"""
from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


@lru_cache(maxsize=32)
def _fernet(secret_key: str, purpose: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"batchrouter",
               info=purpose.encode()).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal(secret_key: str, purpose: str, value: str) -> str:
    return _fernet(secret_key, purpose).encrypt(value.encode()).decode()


def unseal(secret_key: str, purpose: str, token: str) -> str | None:
    """The value, or None when it was sealed under another SECRET_KEY (or is not a token)."""
    try:
        return _fernet(secret_key, purpose).decrypt(token.encode()).decode()
    except InvalidToken:
        return None
