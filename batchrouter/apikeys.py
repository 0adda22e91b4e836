"""Scoped API keys (SPEC §2): shown once, stored as SHA-256, listed as prefix + last 4.

Secrets are `br_live_` / `br_test_` + 43 random base62 characters + a 6-character checksum,
so a mistyped or forged key is rejected before any database lookup (and leak scanners can
recognise ours). 256 bits of randomness make a plain SHA-256 an adequate stored form.
"""
from __future__ import annotations

import hashlib
import secrets
import zlib
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from batchrouter.db import iso, utcnow
from batchrouter.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from batchrouter.models import ApiKey
from batchrouter.records import log_security

SCOPES = ("quote", "submit", "read", "cancel", "billing", "admin")
ROLE_SCOPES = {
    "owner": set(SCOPES),
    "admin": set(SCOPES),
    "member": {"quote", "submit", "read", "cancel"},
    "viewer": {"read"},
}
MODES = ("live", "test")
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN, _CHECK_LEN = 43, 6


def _base62(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, rem = divmod(value, 62)
        out.append(_B62[rem])
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECK_LEN)


def generate_secret(mode: str) -> str:
    body = _base62(int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LEN)
    return f"br_{mode}_{body}{_checksum(body)}"


def well_formed(secret: str) -> bool:
    """Prefix, length, alphabet and checksum are right (no database needed)."""
    for mode in MODES:
        prefix = f"br_{mode}_"
        if isinstance(secret, str) and secret.startswith(prefix):
            rest = secret[len(prefix):]
            body, check = rest[:-_CHECK_LEN], rest[-_CHECK_LEN:]
            return (len(body) == _BODY_LEN and all(c in _B62 for c in rest)
                    and _checksum(body) == check)
    return False


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def allowed_scopes(role: str) -> set[str]:
    return ROLE_SCOPES.get(role, set())


def create_key(session: Session, *, workspace_id: str, creator_id: str | None, creator_role: str,
               name: str, scopes: list[str] | None, mode: str = "live",
               expires_at: datetime | None = None, verified: bool = True,
               ip: str | None = None) -> tuple[ApiKey, str]:
    """Create a key no stronger than its creator; returns the row and the one-time secret."""
    name = (name or "").strip() if isinstance(name, str | None) else ""
    if not name or len(name) > 120:
        raise ValidationFailed("Give the key a name of 1–120 characters.", code="invalid_name")
    if not isinstance(mode, str) or mode not in MODES:
        raise ValidationFailed("mode must be live or test.", code="invalid_mode")
    if mode == "live" and not verified:
        raise Forbidden("Verify your email address before creating live keys; test keys work "
                        "now.", code="email_unverified")
    granted = allowed_scopes(creator_role)
    scopes = sorted(set(scopes if scopes is not None else granted))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValidationFailed(f"Unknown or empty scopes: {', '.join(unknown) or 'none'}. "
                               f"Choose from {', '.join(SCOPES)}.", code="invalid_scopes")
    if not set(scopes) <= granted:
        raise Forbidden("A key cannot have scopes beyond your role: "
                        f"{', '.join(sorted(set(scopes) - granted))}.", code="scope_exceeds_role")
    if expires_at is not None and expires_at <= utcnow():
        raise ValidationFailed("expires_at must be in the future.", code="invalid_expiry")
    secret = generate_secret(mode)
    key = ApiKey(workspace_id=workspace_id, created_by_id=creator_id, name=name, mode=mode,
                 role=creator_role, scopes=scopes, secret_hash=hash_secret(secret),
                 prefix=secret[:8], last4=secret[-4:], expires_at=expires_at)
    session.add(key)
    session.flush()
    log_security(session, "api_key_created", user_id=creator_id, workspace_id=workspace_id,
                 ip=ip, key_id=key.id, name=name, mode=mode, scopes=scopes)
    return key, secret


def authenticate_key(session: Session, secret: str) -> ApiKey:
    """The live key for a presented secret, or Unauthorized with a reason a client can act on."""
    _check_form(secret)
    key = session.scalars(select(ApiKey).where(ApiKey.secret_hash == hash_secret(secret))).first()
    return _live(key)


def authenticate_with_role(session: Session, secret: str) -> tuple[ApiKey, str]:
    """authenticate_key and effective_role in one round trip: every API request pays it."""
    from batchrouter.models import Membership

    _check_form(secret)
    row = session.execute(
        select(ApiKey, Membership.role)
        .outerjoin(Membership, (Membership.workspace_id == ApiKey.workspace_id)
                   & (Membership.user_id == ApiKey.created_by_id))
        .where(ApiKey.secret_hash == hash_secret(secret))).first()
    key = _live(row[0] if row else None)
    return key, _weaker_role(key, row[1])


def _check_form(secret: str) -> None:
    if not well_formed(secret):
        raise Unauthorized("The API key is malformed.", code="invalid_api_key")


def _live(key: ApiKey | None) -> ApiKey:
    if key is None or key.revoked_at is not None:
        raise Unauthorized("The API key is not valid or has been revoked.",
                           code="invalid_api_key")
    now = utcnow()
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthorized("The API key has expired.", code="api_key_expired")
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        key.last_used_at = now  # throttled: one write a minute per key at most
    return key


ROLE_RANK = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}


def effective_role(session: Session, key: ApiKey) -> str:
    """The weaker of the key's role and its creator's role today (SPEC §2: a key never
    exceeds its creator's role); a key whose creator left the workspace stops working."""
    from batchrouter.models import Membership

    current = session.scalars(select(Membership.role).where(
        Membership.workspace_id == key.workspace_id,
        Membership.user_id == key.created_by_id)).first() if key.created_by_id else None
    return _weaker_role(key, current)


def _weaker_role(key: ApiKey, creator_role: str | None) -> str:
    if creator_role is None:
        raise Unauthorized("The API key's creator is no longer a member of this workspace.",
                           code="invalid_api_key")
    return min(key.role, creator_role, key=ROLE_RANK.__getitem__)


def require_scope(key: ApiKey, scope: str) -> None:
    """Forbidden unless the key carries `scope` and its role still allows it."""
    if scope not in (key.scopes or []) or scope not in allowed_scopes(key.role):
        raise Forbidden(f"This API key lacks the '{scope}' scope.", code="insufficient_scope")


def list_keys(session: Session, workspace_id: str, *, include_revoked: bool = False):
    stmt = select(ApiKey).where(ApiKey.workspace_id == workspace_id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(stmt.order_by(ApiKey.created_at.desc(), ApiKey.id.desc())))


def get_key(session: Session, workspace_id: str, key_id: str) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None or key.workspace_id != workspace_id:
        raise NotFound("No such API key.")
    return key


def revoke_key(session: Session, workspace_id: str, key_id: str, *, actor_id: str | None,
               ip: str | None = None) -> ApiKey:
    """Revoke at once; revoking twice is harmless."""
    key = get_key(session, workspace_id, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        log_security(session, "api_key_revoked", user_id=actor_id, workspace_id=workspace_id,
                     ip=ip, key_id=key.id, name=key.name)
    return key


def display(key: ApiKey) -> str:
    """What the console shows instead of the secret."""
    return f"{key.prefix}…{key.last4}"


def to_json(key: ApiKey) -> dict:
    return {"id": key.id, "object": "api_key", "name": key.name, "mode": key.mode,
            "scopes": key.scopes, "display": display(key), "prefix": key.prefix,
            "last4": key.last4, "created_at": iso(key.created_at),
            "expires_at": iso(key.expires_at), "last_used_at": iso(key.last_used_at),
            "revoked": key.revoked_at is not None}

