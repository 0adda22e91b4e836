"""The `wire` transport: a thin aiohttp client for sync provider calls (the hot path only).

The official SDKs spend ~1.3–2 ms of CPU per request building requests and response models
(../shared/reference/performance.md §8); on two cores that caps a sync lane near 600 items/s at
200 ms latency. This client sends the same JSON bodies to the same paths with the same
authentication headers the SDKs send, decodes the answer with orjson, and raises the errors
`classify.from_exception` reads, so adapters swap it in for the SDK's async client without
changing what they put on the wire. Native batches, files and model listings stay on the SDKs.
"""
from __future__ import annotations

import aiohttp
import orjson
from anthropic._constants import ANTHROPIC_API_VERSION

USER_AGENT = "BatchRouter/1 (wire)"


class StatusError(Exception):
    """A non-2xx answer, shaped like the SDKs' APIStatusError for classification."""

    def __init__(self, status_code: int, body, headers):
        super().__init__(f"HTTP {status_code}")
        self.status_code, self.body, self.headers = status_code, body, headers


class MalformedBody(ValueError):
    """A 2xx answer whose body is not JSON (most often a truncated response)."""


def openai_headers(api_key: str) -> dict:
    """Authentication exactly as the installed SDK sends it."""
    import openai

    return dict(openai.OpenAI(api_key=api_key, base_url="http://localhost").auth_headers)


def anthropic_headers(api_key: str) -> dict:
    """Authentication and API version exactly as the installed SDK sends them, so both
    transports ask for the same answers."""
    import anthropic

    client = anthropic.Anthropic(api_key=api_key, base_url="http://localhost")
    return {**client.auth_headers, "anthropic-version": ANTHROPIC_API_VERSION}


class WireClient:
    """POST JSON to `base_url + path` with keep-alive connections, at most `concurrency` open.

    Made on the fan-out loop (aiohttp sessions belong to the loop that created them) and
    cached there by `fanout.client`, so connections outlive a chunk."""

    def __init__(self, base_url: str, headers: dict, concurrency: int, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.headers = {**headers, "Content-Type": "application/json",
                        "Accept": "application/json", "User-Agent": USER_AGENT}
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(1, concurrency), limit_per_host=0,
                                           enable_cleanup_closed=True),
            # A read timeout per call, as the SDKs' timeout means: connect and each read.
            timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout),
            skip_auto_headers=("User-Agent",), auto_decompress=True)

    async def close(self) -> None:
        await self.session.close()

    async def post(self, path: str, *, body: dict, cast_to=object):
        """The decoded JSON answer; StatusError for non-2xx; aiohttp/asyncio errors for the
        transport (timeouts, resets, truncated bodies) pass through to classification."""
        async with self.session.post(self.base_url + path, data=orjson.dumps(body),
                                     headers=self.headers) as response:
            raw = await response.read()
            if response.status >= 300:
                raise StatusError(response.status, _json_or_text(raw), response.headers)
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise MalformedBody(f"the body is not JSON ({len(raw)} bytes): {exc}") from None


def _json_or_text(raw: bytes):
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:500].decode("utf-8", "replace")
