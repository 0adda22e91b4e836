"""Sign one webhook request and send it over a connection pinned to a vetted address.

No pool and no redirects: every attempt resolves and checks the host again (targets.pin) and
dials that address, with the URL's host kept for the Host header and TLS SNI/certificate checks.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from standardwebhooks import Webhook

from batchrouter.webhooks import targets

TIMEOUT = 15.0
EXCERPT = 500
USER_AGENT = "BatchRouter-Webhooks/1"


def standard_key(secret: str) -> bytes:
    """Standard Webhooks key: the decoded part of a `whsec_` secret, else its UTF-8 bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):] + "==")
    return secret.encode()


def sign(event_id: str, body: str, secrets: list[str], timestamp: int) -> dict:
    """The signature headers for one attempt; several secrets during a rotation overlap."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    standard = " ".join(Webhook(standard_key(s)).sign(event_id, when, body) for s in secrets)
    simple = " ".join(hmac.new(s.encode(), body.encode(), hashlib.sha256).hexdigest()
                      for s in secrets)
    return {"webhook-id": event_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": standard, "X-BatchRouter-Signature": simple}


@dataclass
class Outcome:
    status_code: int | None
    latency_ms: int
    excerpt: str | None = None
    error: str | None = None
    retry_after: float | None = None
    blocked: bool = False  # refused before connecting (SSRF check at connect time)

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self):
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        from email.utils import parsedate_to_datetime
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def post(url: str, body: str, headers: dict, *, allow_private: bool, resolver=None,
         timeout: float = TIMEOUT) -> Outcome:
    """POST once; never raises for network or HTTP failures (they become the Outcome)."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target, address = targets.pin(url, allow_private=allow_private, resolver=resolver)
    except targets.TargetRefused as exc:
        return Outcome(None, took(), error=f"blocked: {exc.message}", blocked=True)
    kind = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    conn = kind(target.host, target.port, str(address), timeout)
    try:
        conn.request("POST", target.path, body=body.encode(), headers={
            **headers, "Content-Type": "application/json", "User-Agent": USER_AGENT})
        conn.sock.settimeout(max(0.1, timeout - (time.monotonic() - started)))
        response = conn.getresponse()
        excerpt = response.read(EXCERPT).decode("utf-8", "replace")
        outcome = Outcome(response.status, took(), excerpt=excerpt,
                          retry_after=retry_after_seconds(response.getheader("Retry-After")))
        if 300 <= response.status < 400:
            outcome.error = f"redirect to {response.getheader('Location', '?')[:200]} not followed"
        elif not outcome.ok:
            outcome.error = f"HTTP {response.status}"
        return outcome
    except (OSError, http.client.HTTPException) as exc:
        kind_name = "timeout" if isinstance(exc, (socket.timeout, TimeoutError)) else \
            type(exc).__name__
        return Outcome(None, took(), error=f"{kind_name}: {exc}"[:500])
    finally:
        conn.close()
