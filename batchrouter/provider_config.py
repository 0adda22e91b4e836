"""Where each catalog provider is reached: base URL, key and rate limits, from the console or
the environment (SPEC §12).

A key saved in the console wins over the environment (`OPENAI_API_KEY`, …); a base URL saved in
the console wins over `*_BASE_URL`, which wins over the catalog's default. Saved keys are
sealed (sealing.py: a key derived from SECRET_KEY, HKDF → Fernet) and only their last 4
characters are ever shown again.
"""
from __future__ import annotations

import re
from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.orm import Session

from batchrouter import sealing
from batchrouter.db import utcnow
from batchrouter.errors import NotFound, ValidationFailed
from batchrouter.models import Provider, ProviderCredential
from batchrouter.providers import Connection, connect

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,38}$")


PURPOSE = "provider-credentials"


def encrypt(secret: str, value: str) -> str:
    return sealing.seal(secret, PURPOSE, value)


def decrypt(secret: str, token: str) -> str | None:
    return sealing.unseal(secret, PURPOSE, token)  # None: SECRET_KEY changed, enter it again


def stored(session: Session, secret: str) -> dict:
    """slug -> (key or None, base_url or None, rpm, tpm) saved in the console."""
    out = {}
    for row in session.scalars(select(ProviderCredential)):
        key = decrypt(secret, row.api_key_encrypted) if row.api_key_encrypted else None
        out[row.provider_slug] = (key, row.base_url or None, row.requests_per_minute,
                                  row.tokens_per_minute)
    return out


def resolve(provider: Provider, config: dict, saved: dict | None = None) -> Connection:
    """The connection for one provider row."""
    key, url, _rpm, _tpm = (saved or {}).get(provider.slug, (None, None, 0, 0))
    key = key or (config.get(provider.credential_env) if provider.credential_env else None)
    url = url or (config.get(provider.base_url_env) if provider.base_url_env else None) \
        or provider.base_url
    return Connection(provider.adapter, url or "", key, provider.max_batch_items,
                      provider.max_batch_bytes)


def connections(session: Session, config: dict) -> dict:
    """slug -> Connection for every non-sandbox provider."""
    saved = stored(session, config.get("SECRET_KEY") or "")
    rows = session.scalars(select(Provider).where(Provider.adapter != "sandbox"))
    return {p.slug: resolve(p, config, saved) for p in rows}


def rate_limits(session: Session) -> dict:
    """slug -> (requests/min, tokens/min) where an operator set limits."""
    return {r.provider_slug: (r.requests_per_minute, r.tokens_per_minute)
            for r in session.scalars(select(ProviderCredential))
            if r.requests_per_minute or r.tokens_per_minute}


def configured_slugs(session: Session) -> set[str]:
    """Providers whose access was saved in the console (a key, or a base URL for servers
    that need no key)."""
    return {r.provider_slug for r in session.scalars(select(ProviderCredential))
            if r.api_key_encrypted or r.base_url}


def _check_url(value: str) -> str:
    value = value.strip()
    if not value:
        return ""
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValidationFailed("Base URL must be an http(s) URL.", code="invalid_base_url")
    return value.rstrip("/")


def _limit(value, name: str) -> int:
    try:
        number = int(str(value or "0").strip() or 0)
    except ValueError:
        number = -1
    if number < 0:
        raise ValidationFailed(f"{name} must be a whole number ≥ 0.", code="invalid_rate_limit")
    return number


def save(session: Session, secret: str, slug: str, *, api_key: str | None, base_url: str,
         rpm=0, tpm=0, user_id: str | None = None) -> ProviderCredential:
    """Save a provider's access. An empty `api_key` keeps the stored one."""
    if session.get(Provider, slug) is None:
        raise NotFound("No such provider.", code="provider_not_found")
    row = session.get(ProviderCredential, slug) or ProviderCredential(provider_slug=slug)
    if api_key and api_key.strip():
        key = api_key.strip()
        if len(key) < 8 or any(c.isspace() for c in key):
            raise ValidationFailed("That does not look like an API key.", code="invalid_api_key")
        row.api_key_encrypted, row.key_last4 = encrypt(secret, key), key[-4:]
    row.base_url = _check_url(base_url)
    row.requests_per_minute = _limit(rpm, "Requests per minute")
    row.tokens_per_minute = _limit(tpm, "Tokens per minute")
    row.updated_at, row.updated_by = utcnow(), user_id
    session.add(row)
    session.flush()
    return row


def forget_key(session: Session, slug: str) -> None:
    row = session.get(ProviderCredential, slug)
    if row is not None:
        row.api_key_encrypted, row.key_last4, row.updated_at = None, "", utcnow()


def register_compatible(session: Session, slug: str, name: str, base_url: str) -> Provider:
    """An operator adds an OpenAI-compatible server (vLLM, Ollama, Together, Groq …); its
    models and prices are added as offerings in the catalog like any other provider's."""
    if not SLUG.match(slug or ""):
        raise ValidationFailed("Slug: 2–39 lowercase letters, digits or dashes.",
                               code="invalid_slug")
    if session.get(Provider, slug) is not None:
        raise ValidationFailed("A provider with that slug exists.", code="provider_exists")
    url = _check_url(base_url)
    if not url:
        raise ValidationFailed("A base URL is required.", code="invalid_base_url")
    count = len(session.scalars(select(Provider.slug)).all())
    provider = Provider(slug=slug, name=(name or slug).strip()[:120], adapter="compatible",
                        base_url=url, credential_env="", base_url_env="", regions=["global"],
                        max_batch_items=50_000, max_batch_bytes=200 * 1024 * 1024,
                        notes="OpenAI-compatible server registered by an operator.",
                        position=count)
    session.add(provider)
    session.flush()
    return provider


def test_connection(session: Session, config: dict, slug: str, timeout: float = 10.0) -> tuple:
    """(ok, message) from a cheap authenticated call (list models) to the provider."""
    provider = session.get(Provider, slug)
    if provider is None:
        raise NotFound("No such provider.", code="provider_not_found")
    if provider.adapter == "sandbox":
        return True, "The sandbox is built in."
    conn = connections(session, config)[slug]
    if not conn.base_url:
        return False, "No base URL configured."
    try:
        return True, connect(slug, conn, timeout=timeout).check()
    except Exception as exc:  # noqa: BLE001 - reported to the operator, not raised
        from batchrouter.providers import classify

        err = classify.from_exception(slug, exc)
        return False, f"{err['code']}: {err['message']}"
