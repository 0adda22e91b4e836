"""Provider health in Redis, shared by every worker: rolling outcomes, circuit breakers, rate
limits and recent errors, per provider and per lane (SPEC §11, checklist §7).

Breaker: closed (outcomes counted in a rolling window) → open when at least `min_calls` calls
in the window failed at `failure_ratio` or more → after `cooldown` seconds half-open, where only
`probes` calls go through: a success closes it, a failure opens it again. Only outcomes that say
something about the provider count: successes, transient failures, auth failures — a request
the provider rightly rejected (400) is the caller's problem, not the provider's.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from batchrouter import metrics

PREFIX = "br:health:"
BUCKET = 10  # seconds per rolling-window bucket
RECENT_ERRORS = 20
PROVIDER_FAULTS = {"provider_auth_failed", "provider_permission_denied", "provider_stalled"}
# Failures that say the whole provider is unwell, not just one lane (model × mode) of it.
PROVIDER_WIDE = {"provider_auth_failed", "provider_permission_denied", "provider_out_of_credit",
                 "provider_connection_error", "provider_timeout"}


@dataclass(frozen=True)
class Policy:
    window: int = 120  # seconds of outcomes the breaker looks at
    min_calls: int = 10
    failure_ratio: float = 0.5
    cooldown: float = 30.0
    probes: int = 3


def policy_from(cfg) -> Policy:
    """The breaker policy from configuration (BATCHROUTER_BREAKER_*)."""
    return Policy(window=cfg["BATCHROUTER_BREAKER_WINDOW"],
                  min_calls=cfg["BATCHROUTER_BREAKER_MIN_CALLS"],
                  failure_ratio=cfg["BATCHROUTER_BREAKER_FAILURE_RATIO"],
                  cooldown=cfg["BATCHROUTER_BREAKER_COOLDOWN"],
                  probes=cfg["BATCHROUTER_BREAKER_PROBES"])


def counts_against(err: dict | None, scope: str = "lane") -> bool:
    """Whether a failed item says the lane (or, for scope "provider", the whole provider)
    is unwell, rather than that the request was bad."""
    if not err:
        return False
    if scope == "provider":
        return err.get("code") in PROVIDER_WIDE
    return bool(err.get("retryable")) or err.get("code") in PROVIDER_FAULTS


def _notify(scope: str, state: str) -> None:
    metrics.breaker_state(scope, state)


class Health:
    def __init__(self, redis, policy: Policy = Policy()):
        self.redis, self.policy = redis, policy

    # --- outcomes ------------------------------------------------------------------------

    def record(self, scopes: tuple[str, ...], ok: int, failed: int, latency_ms: int = 0,
               error: dict | None = None) -> None:
        """Count a chunk's outcomes for each scope (a provider slug and a lane name)."""
        now = time.time()
        bucket = int(now // BUCKET)
        pipe = self.redis.pipeline()
        for scope in scopes:
            key = f"{PREFIX}win:{scope}:{bucket}"
            pipe.hincrby(key, "ok", ok)
            pipe.hincrby(key, "fail", failed)
            pipe.hincrby(key, "latency", latency_ms)
            pipe.expire(key, self.policy.window + BUCKET)
            if error:
                errors = f"{PREFIX}errors:{scope}"
                pipe.lpush(errors, json.dumps({**error, "at": int(now)}))
                pipe.ltrim(errors, 0, RECENT_ERRORS - 1)
        pipe.execute()
        for scope in scopes:
            self._transition(scope, ok, failed, now)

    def window(self, scope: str) -> dict:
        """Calls, failures and mean latency over the rolling window."""
        now_bucket = int(time.time() // BUCKET)
        pipe = self.redis.pipeline()
        for b in range(now_bucket - self.policy.window // BUCKET, now_bucket + 1):
            pipe.hgetall(f"{PREFIX}win:{scope}:{b}")
        ok = fail = latency = 0
        for row in pipe.execute():
            ok += int(row.get(b"ok", 0))
            fail += int(row.get(b"fail", 0))
            latency += int(row.get(b"latency", 0))
        calls = ok + fail
        return {"calls": calls, "failed": fail, "success_rate": ok / calls if calls else 1.0,
                "latency_ms": latency // calls if calls else 0}

    def recent_errors(self, scope: str) -> list[dict]:
        return [json.loads(e) for e in self.redis.lrange(f"{PREFIX}errors:{scope}", 0, -1)]

    # --- breaker -------------------------------------------------------------------------

    def _breaker(self, scope: str) -> dict:
        raw = self.redis.hgetall(f"{PREFIX}breaker:{scope}")
        return {k.decode(): v.decode() for k, v in raw.items()}

    def _set(self, scope: str, state: str, now: float) -> None:
        key = f"{PREFIX}breaker:{scope}"
        self.redis.delete(key)
        self.redis.hset(key, mapping={"state": state, "since": now, "probes": 0})
        _notify(scope, state)

    def _transition(self, scope: str, ok: int, failed: int, now: float) -> None:
        state = self.state(scope)
        if state == "half_open":
            if failed:
                self._set(scope, "open", now)
            elif ok:
                self._clear_window(scope)
                self._set(scope, "closed", now)
            return
        if state == "closed" and failed:
            w = self.window(scope)
            if w["calls"] >= self.policy.min_calls and \
                    w["failed"] / w["calls"] >= self.policy.failure_ratio:
                self._set(scope, "open", now)

    def _clear_window(self, scope: str) -> None:
        keys = list(self.redis.scan_iter(f"{PREFIX}win:{scope}:*"))
        if keys:
            self.redis.delete(*keys)

    def state(self, scope: str) -> str:
        b = self._breaker(scope)
        state = b.get("state", "closed")
        if state == "open" and time.time() - float(b.get("since", 0)) >= self.policy.cooldown:
            return "half_open"
        return state

    def allow(self, scope: str, wanted: int) -> int:
        """How many of `wanted` calls may go to this scope now (0 while open; a few probes
        while half-open, shared by every worker)."""
        state = self.state(scope)
        if state == "closed":
            return wanted
        if state == "open":
            return 0
        key = f"{PREFIX}breaker:{scope}"
        if self.redis.hget(key, "state") != b"half_open":
            self.redis.hset(key, mapping={"state": "half_open", "since": time.time(),
                                          "probes": 0})
            _notify(scope, "half_open")
        used = self.redis.hincrby(key, "probes", wanted)
        return max(0, min(wanted, self.policy.probes - (used - wanted)))

    def cooldown_left(self, scope: str) -> float:
        b = self._breaker(scope)
        if b.get("state") != "open":
            return 0.0
        return max(0.0, self.policy.cooldown - (time.time() - float(b.get("since", 0))))

    def force(self, scope: str, state: str) -> None:
        """Set a breaker by hand (operator action, tests)."""
        self._set(scope, state, time.time())

    # --- rate limits ---------------------------------------------------------------------

    def take(self, provider: str, requests: int, tokens: int, rpm: int, tpm: int) -> float:
        """Reserve requests and tokens in this minute's window for a provider, shared across
        workers. Returns 0 when granted, else seconds to wait (nothing is reserved)."""
        if not rpm and not tpm:
            return 0.0
        now = time.time()
        minute = int(now // 60)
        key = f"{PREFIX}rate:{provider}:{minute}"
        pipe = self.redis.pipeline()
        pipe.hincrby(key, "req", requests)
        pipe.hincrby(key, "tok", tokens)
        pipe.expire(key, 120)
        used_req, used_tok, _ = pipe.execute()
        if (rpm and used_req > rpm and used_req > requests) or \
                (tpm and used_tok > tpm and used_tok > tokens):
            pipe = self.redis.pipeline()
            pipe.hincrby(key, "req", -requests)
            pipe.hincrby(key, "tok", -tokens)
            pipe.execute()
            return (minute + 1) * 60 - now
        return 0.0
