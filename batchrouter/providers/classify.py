"""Classify every provider outcome (SPEC §5): permanent, or transient and worth a retry.

Both official SDKs raise the same family of exceptions (Stainless-generated), and the `wire`
transport raises aiohttp's or its own StatusError shaped like theirs, so one function serves
all. Transient: 408/409/425/429/5xx, timeouts, dropped connections, bodies that are not
the JSON they should be (a truncated response), a provider batch that expired. Permanent: other
4xx (validation, auth, not found), content policy, context too long. The provider's own hint
(`retry-after-ms`, `retry-after`) travels with the error so the retry waits at least that long.
"""
from __future__ import annotations

import asyncio
import email.utils
import time

import aiohttp
import anthropic
import openai

from batchrouter.providers import wire
from batchrouter.providers.base import TRANSIENT_STATUSES, error

CONTEXT_MARKERS = ("context_length", "context length", "maximum context", "too many tokens",
                   "prompt is too long", "context window")
POLICY_MARKERS = ("content_policy", "content policy", "content_filter", "safety system",
                  "flagged")
STATUS_CODES = {400: "invalid_request", 401: "provider_auth_failed",
                403: "provider_permission_denied", 404: "provider_model_not_found",
                402: "provider_out_of_credit", 413: "request_too_large",
                422: "invalid_request"}


def retry_after(headers) -> float | None:
    """Seconds the provider asked us to wait, from `retry-after-ms` or `retry-after`."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:500]
    return str(exc)[:500]


def from_status(provider: str, status: int, message: str, headers=None) -> dict:
    """An HTTP error status (a sync call, or a line of a provider batch's error file)."""
    lowered = message.lower()
    if status in TRANSIENT_STATUSES or status >= 500:
        code = {429: "rate_limited", 408: "provider_timeout", 409: "provider_conflict"}.get(
            status, "provider_unavailable")
        return error(code, message, retryable=True, provider=provider, status_code=status,
                     retry_after=retry_after(headers))
    if any(m in lowered for m in CONTEXT_MARKERS):
        code = "context_too_long"
    elif any(m in lowered for m in POLICY_MARKERS):
        code = "content_policy"
    else:
        code = STATUS_CODES.get(status, "provider_rejected")
    return error(code, message, retryable=False, provider=provider, status_code=status)


def from_exception(provider: str, exc: BaseException) -> dict:
    """Any exception raised while calling a provider, as a structured item error."""
    if isinstance(exc, (openai.APITimeoutError, anthropic.APITimeoutError, asyncio.TimeoutError)):
        return error("provider_timeout", "The provider did not answer in time.",
                     retryable=True, provider=provider)
    if isinstance(exc, (openai.APIStatusError, anthropic.APIStatusError)):
        return from_status(provider, exc.status_code, _message(exc), exc.response.headers)
    if isinstance(exc, wire.StatusError):
        return from_status(provider, exc.status_code, _message(exc), exc.headers)
    if isinstance(exc, (openai.APIResponseValidationError, anthropic.APIResponseValidationError,
                        aiohttp.ClientPayloadError, ValueError, KeyError, TypeError)):
        # A body that is not what the wire format promises: most often a truncated response.
        return error("malformed_response", f"The provider's response was malformed: {exc}"[:500],
                     retryable=True, provider=provider)
    if isinstance(exc, (openai.APIConnectionError, anthropic.APIConnectionError,
                        aiohttp.ClientError, ConnectionError)):
        return error("provider_connection_error", "The connection to the provider failed.",
                     retryable=True, provider=provider)
    return error("provider_error", f"{type(exc).__name__}: {exc}"[:500], retryable=True,
                 provider=provider)


def from_batch_line_error(provider: str, err: dict) -> dict:
    """A non-HTTP failure inside a provider batch (`batch_expired`, `request_timeout`, …)."""
    code = str(err.get("code") or err.get("type") or "provider_error")
    message = str(err.get("message") or code)
    if code in ("invalid_request_error", "invalid_request"):
        return error("invalid_request", message, retryable=False, provider=provider)
    if code in ("batch_cancelled", "canceled", "cancelled"):
        return error("provider_batch_cancelled", message, retryable=True, provider=provider)
    mapped = {"batch_expired": "provider_batch_expired", "expired": "provider_batch_expired",
              "request_timeout": "provider_timeout"}.get(code, code)
    return error(mapped, message, retryable=True, provider=provider)
