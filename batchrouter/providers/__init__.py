"""Provider adapters by slug. Only adapters listed in ADAPTERS can be routed to."""
from __future__ import annotations

from dataclasses import dataclass

from batchrouter.providers.sandbox import SandboxProvider

# provider adapter kind -> factory(settings). The real-provider issue adds openai, anthropic,
# openrouter and compatible here; until then their lanes are "not configured".
ADAPTERS = {"sandbox"}


@dataclass(frozen=True)
class ProviderSettings:
    sandbox_latency_ms: int = 0
    sandbox_failure_rate: float = 0.0
    sandbox_batch_delay: float = 2.0
    sandbox_state_dir: str | None = None


def get_provider(slug: str, settings: ProviderSettings):
    """The adapter for a provider slug."""
    if slug == "sandbox":
        return SandboxProvider(latency_ms=settings.sandbox_latency_ms,
                               failure_rate=settings.sandbox_failure_rate,
                               batch_delay=settings.sandbox_batch_delay,
                               state_dir=settings.sandbox_state_dir)
    raise LookupError(f"no adapter for provider {slug!r}")
