"""Provider adapters by kind. Only adapters listed in ADAPTERS can be routed to."""
from __future__ import annotations

from dataclasses import dataclass, field

from batchrouter.providers.sandbox import SandboxProvider

# The adapter kinds this installation has (catalog `Provider.adapter`).
ADAPTERS = {"sandbox", "openai", "anthropic", "openrouter", "compatible"}
# Kinds whose lanes may be native-batch lanes (compatible: when the server has Files+Batches).
NATIVE_BATCH = {"sandbox", "openai", "anthropic", "compatible"}


@dataclass(frozen=True)
class Connection:
    """Where and how to reach one catalog provider (resolved from the console or env)."""

    adapter: str
    base_url: str
    api_key: str | None = None
    max_batch_items: int = 0
    max_batch_bytes: int = 0


@dataclass(frozen=True)
class ProviderSettings:
    sandbox_latency_ms: int = 0
    sandbox_failure_rate: float = 0.0
    sandbox_batch_delay: float = 2.0
    sandbox_state_dir: str | None = None
    connections: dict = field(default_factory=dict)  # provider slug -> Connection
    concurrency: int = 64  # requests in flight per lane inside one work unit
    timeout: float = 60.0  # read timeout of one provider call (seconds)
    transport: str = "httpx"  # sync lanes' HTTP transport: wire, aiohttp (SDK's) or httpx


def get_provider(slug: str, settings: ProviderSettings):
    """The adapter for a provider slug."""
    if slug == "sandbox":
        return SandboxProvider(latency_ms=settings.sandbox_latency_ms,
                               failure_rate=settings.sandbox_failure_rate,
                               batch_delay=settings.sandbox_batch_delay,
                               state_dir=settings.sandbox_state_dir)
    conn = settings.connections.get(slug)
    if conn is None:
        raise LookupError(f"no adapter for provider {slug!r}")
    return connect(slug, conn, settings.concurrency, settings.timeout, settings.transport)


def connect(slug: str, conn: Connection, concurrency: int = 64, timeout: float = 60.0,
            transport: str = "httpx"):
    """An adapter instance for a resolved connection."""
    limits = {"max_batch_items": conn.max_batch_items, "max_batch_bytes": conn.max_batch_bytes,
              "transport": transport}
    if conn.adapter == "anthropic":
        from batchrouter.providers.anthropic_api import AnthropicProvider

        return AnthropicProvider(slug, conn.base_url, conn.api_key, concurrency=concurrency,
                                 timeout=timeout, **limits)
    if conn.adapter in ("openai", "openrouter", "compatible"):
        from batchrouter.providers.openai_api import OpenAIProvider

        return OpenAIProvider(slug, conn.base_url, conn.api_key,
                              native_batch=conn.adapter != "openrouter",
                              openrouter=conn.adapter == "openrouter", concurrency=concurrency,
                              timeout=timeout, **limits)
    raise LookupError(f"no adapter of kind {conn.adapter!r}")
