"""Signed, expiring, purpose-bound tokens for emailed links and download URLs (itsdangerous)."""
from __future__ import annotations

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from batchrouter.errors import DomainError


class TokenInvalid(DomainError):
    code, status = "token_invalid", 400


class TokenExpired(DomainError):
    code, status = "token_expired", 400


def sign(secret: str, purpose: str, payload: dict) -> str:
    """Sign `payload` for one purpose; the salt keeps a token from being reused elsewhere."""
    return URLSafeTimedSerializer(secret, salt=f"batchrouter:{purpose}").dumps(payload)


def unsign(secret: str, purpose: str, token: str, max_age: int) -> dict:
    """Verify a token of this purpose no older than `max_age` seconds and return its payload."""
    serializer = URLSafeTimedSerializer(secret, salt=f"batchrouter:{purpose}")
    try:
        return serializer.loads(token, max_age=max_age)
    except SignatureExpired as exc:
        raise TokenExpired("This link has expired.") from exc
    except BadSignature as exc:
        raise TokenInvalid("This link is not valid.") from exc
