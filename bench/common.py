"""Shared bench helpers: a throwaway app on SQLite, manifests, timers."""
from __future__ import annotations

import json
import os
import random
import tempfile
import time
from contextlib import contextmanager

MODELS = ["gpt-4o-mini", "gpt-4.1-mini", "claude-haiku-4-5", "sandbox-chat", "llama-3.3-70b-instruct"]
WORDS = ["batch", "routing", "quote", "lane", "provider", "model", "token", "price", "credit", "receipt", "webhook", "artifact", "settle", "reserve", "window", "latency", "throughput", "summarize", "classify"]


def make_line(i: int, rng: random.Random) -> bytes:
    """One ~720-byte item: native or OpenAI line shape, one of five models."""
    text = " ".join(rng.choice(WORDS) for _ in range(85))
    model = MODELS[i % len(MODELS)]
    if i % 2:
        item = {"custom_id": f"item-{i}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": model, "max_tokens": 300,
                         "messages": [{"role": "system", "content": "You are terse."},
                                      {"role": "user", "content": text}]}}
    else:
        item = {"customer_item_id": f"item-{i}", "operation": "responses", "model": model,
                "input": {"messages": [{"role": "user", "content": text}],
                          "max_output_tokens": 300}, "metadata": {"n": str(i)}}
    return json.dumps(item, separators=(",", ":")).encode() + b"\n"


def write_manifest(path: str, n: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    size = 0
    with open(path, "wb") as fh:
        for i in range(n):
            line = make_line(i, rng)
            size += len(line)
            fh.write(line)
    return size


def bench_app(tmp: str, **overrides):
    """An app on a fresh migrated SQLite file with the catalog and a funded workspace."""
    from batchrouter import apikeys, catalog, create_app, ledger
    from batchrouter.cli import seed_demo
    from batchrouter.extensions import account_settings
    from batchrouter.migrate import upgrade

    url = f"sqlite:///{tmp}/bench.db"
    upgrade(url)
    config = {"DATABASE_URL": url, "REDIS_URL": os.environ.get("BENCH_REDIS_URL"),
              "SECRET_KEY": "bench", "BATCHROUTER_STORAGE_ROOT": f"{tmp}/storage",
              "BATCHROUTER_API_LIMIT_KEY": "100000 per minute",
              "BATCHROUTER_API_LIMIT_WORKSPACE": "100000 per minute",
              "OPENAI_API_KEY": "sk-bench", "ANTHROPIC_API_KEY": "sk-bench",
              "OPENROUTER_API_KEY": "sk-bench", **overrides}
    app = create_app(config)
    with app.app_context(), app.extensions["batchrouter"].db.session() as s:
        catalog.seed(s)
        user, workspace_id = seed_demo(s, account_settings(), 100_000_000)
        ledger.grant(s, workspace_id, 1_000_000_000_000, kind="promo", reason="bench",
                     idempotency_key="bench-credits")
        _key, secret = apikeys.create_key(s, workspace_id=workspace_id, creator_id=user.id,
                                          creator_role="owner", name="bench", scopes=None)
    return app, secret, workspace_id


@contextmanager
def timed(results: dict, name: str):
    start = time.perf_counter()
    yield
    results[name] = time.perf_counter() - start


def tmpdir() -> str:
    return tempfile.mkdtemp(prefix="br-bench-")


def row(name: str, value: str, target: str = "", ok: bool | None = None) -> str:
    mark = "" if ok is None else ("  OK" if ok else "  MISSED")
    return f"  {name:<52} {value:>14}   {target}{mark}"
