"""Load test (issue 11.6): 100 concurrent API clients for 2 minutes against the multi-process
setup (PostgreSQL, gunicorn in its production shape — scripts/gunicorn_conf.py: one sync process
per core plus one —, 3 `flask worker` processes, Redis).

Each client has its own API key (20 workspaces × 5 keys) and loops: quote a small batch, create
it, poll `GET /v1/batches/{id}` every second until it is terminal, list its batches. Before the
load, one client alone measures `GET /v1/batches/{id}` (performance.md B11).

Prints requests/s, p50/p95/p99 per endpoint and overall, and errors (5xx, other unexpected
statuses, transport errors), cross-checked with the server's own /metrics. Exits non-zero
when a target is missed: zero 5xx, p95 of the polling endpoints < 300 ms under load,
single-client `GET /v1/batches/{id}` p95 < 15 ms.
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import aiohttp
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cluster import Cluster, seed_workspaces
from bench.common import row

CLIENTS = int(os.environ.get("BENCH_LOAD_CLIENTS", "100"))
SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "120"))
POLL_EVERY = float(os.environ.get("BENCH_LOAD_POLL_INTERVAL", "1.0"))
ITEMS_PER_BATCH = 5
SINGLE_CLIENT_REQUESTS = 500
METRICS_TOKEN = "bench-metrics-token"
SETTINGS = {
    # One key per client, but 100 clients in 20 workspaces would trip the default
    # per-workspace limit (1,200/min) by design; the bench measures the server, not the limiter.
    "BATCHROUTER_API_LIMIT_KEY": "100000 per minute",
    "BATCHROUTER_API_LIMIT_WORKSPACE": "100000 per minute",
    "BATCHROUTER_SANDBOX_BATCH_DELAY": "2", "BATCHROUTER_POLL_INTERVAL": "1",
    "BATCHROUTER_METRICS_TOKEN": METRICS_TOKEN,
}
POLLING = ("GET /v1/batches/{id}", "GET /v1/batches")


def manifest(client: int, n: int) -> list[dict]:
    return [{"customer_item_id": f"c{client}-{n}-{i}", "operation": "responses",
             "model": "sandbox-chat",
             "input": {"messages": [{"role": "user", "content": f"Ticket {n}/{i}: refund?"}],
                       "max_output_tokens": 16}} for i in range(ITEMS_PER_BATCH)]


class Recorder:
    def __init__(self):
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.transport_errors = 0

    async def call(self, http: aiohttp.ClientSession, name: str, method: str, url: str, **kw):
        """One request; returns (status, JSON body) or None on a transport error."""
        start = time.perf_counter()
        try:
            async with http.request(method, url, **kw) as response:
                body = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError):
            self.transport_errors += 1
            return None
        self.latencies[name].append((time.perf_counter() - start) * 1000)
        self.statuses[name][status] += 1
        return status, (json.loads(body) if body else None)


async def client_loop(n: int, secret: str, base: str, stop_at: float, rec: Recorder,
                      http: aiohttp.ClientSession) -> int:
    headers = {"Authorization": f"Bearer {secret}"}
    created = 0
    while time.monotonic() < stop_at:
        items = manifest(n, created)
        quote = await rec.call(http, "POST /v1/quotes/model", "POST", f"{base}/v1/quotes/model",
                               json={"items": items}, headers=headers)
        if quote is None or quote[0] != 201:
            await asyncio.sleep(POLL_EVERY)
            continue
        batch = await rec.call(http, "POST /v1/batches", "POST", f"{base}/v1/batches",
                               json={"quote_id": quote[1]["id"], "items": items},
                               headers=headers)
        if batch is None or batch[0] != 201:
            await asyncio.sleep(POLL_EVERY)
            continue
        created += 1
        batch_id = batch[1]["id"]
        while time.monotonic() < stop_at:
            await asyncio.sleep(POLL_EVERY)
            got = await rec.call(http, "GET /v1/batches/{id}", "GET",
                                 f"{base}/v1/batches/{batch_id}", headers=headers)
            if got is not None and got[0] == 200 and got[1]["status"] in (
                    "completed", "failed", "cancelled", "expired"):
                break
        await rec.call(http, "GET /v1/batches", "GET", f"{base}/v1/batches?limit=10",
                       headers=headers)
    return created


async def run_load(base: str, secrets: list[str]) -> tuple[Recorder, float, int]:
    rec = Recorder()
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        start = time.monotonic()
        stop_at = start + SECONDS
        # Clients start over the first second, as real ones would not arrive in lockstep.
        async def staggered(n, secret):
            await asyncio.sleep(n / CLIENTS)
            return await client_loop(n, secret, base, stop_at, rec, http)
        created = await asyncio.gather(*(staggered(n, s) for n, s in enumerate(secrets)))
        elapsed = time.monotonic() - start
    return rec, elapsed, sum(created)


def pct(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def single_client(base: str, secret: str) -> list[float]:
    """`GET /v1/batches/{id}` from one client on a keep-alive connection, nothing else running."""
    headers = {"Authorization": f"Bearer {secret}"}
    items = manifest(-1, 0)
    with requests.Session() as http:
        quote = http.post(f"{base}/v1/quotes/model", json={"items": items}, headers=headers)
        batch = http.post(f"{base}/v1/batches", json={"quote_id": quote.json()["id"],
                                                      "items": items}, headers=headers)
        url = f"{base}/v1/batches/{batch.json()['id']}"
        for _ in range(50):  # warm both gunicorn processes
            http.get(url, headers=headers)
        times = []
        for _ in range(SINGLE_CLIENT_REQUESTS):
            start = time.perf_counter()
            assert http.get(url, headers=headers).status_code == 200
            times.append((time.perf_counter() - start) * 1000)
    return times


def server_5xx(base: str) -> int:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
                        timeout=30).text
    return int(sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "batchrouter_http_requests_total"
                   and s.labels["status"].startswith("5")))


def main() -> int:
    cluster = Cluster("load", dict(SETTINGS))
    try:
        cluster.start_redis()
        where = cluster.start_postgres()
        cluster.migrate()
        app = cluster.app()
        secrets = [s for _ws, keys in seed_workspaces(app, CLIENTS // 5 or 1, 5) for s in keys]
        secrets = secrets[:CLIENTS]
        shape = cluster.start_web()
        for _ in range(3):
            cluster.start_worker()
        time.sleep(2)
        quiet_load = os.getloadavg()[0]
        single = single_client(cluster.base_url, secrets[0])
        rec, elapsed, batches = asyncio.run(run_load(cluster.base_url, secrets))
        busy_load = os.getloadavg()[0]
        server_errors = server_5xx(cluster.base_url)
    finally:
        cluster.stop()
    every = [ms for values in rec.latencies.values() for ms in values]
    total = len(every)
    fivexx = sum(c for st in rec.statuses.values() for code, c in st.items() if code >= 500)
    unexpected = sum(c for st in rec.statuses.values() for code, c in st.items()
                     if 400 <= code < 500)
    polling = [ms for name in POLLING for ms in rec.latencies[name]]
    print(f"bench/load.py — PostgreSQL ({where}), gunicorn {shape}, 3 workers, {CLIENTS} clients "
          f"× {SECONDS:.0f} s, poll every {POLL_EVERY:.1f} s, {ITEMS_PER_BATCH}-item batches; "
          f"load average {quiet_load:.1f} before, {busy_load:.1f} after, {os.cpu_count()} cores")
    print(row("single client GET /v1/batches/{id} p50 / p95",
              f"{statistics.median(single):.1f} / {pct(single, 95):.1f} ms",
              "target p95 < 15 ms", pct(single, 95) < 15))
    print(row("requests / requests per second", f"{total:,} / {total / elapsed:,.0f}"))
    print(row("batches created and polled", f"{batches:,}"))
    for name, values in sorted(rec.latencies.items()):
        print(row(f"{name} ({len(values):,}) p50/p95/p99",
                  f"{pct(values, 50):.0f}/{pct(values, 95):.0f}/{pct(values, 99):.0f} ms"))
    print(row("all requests p50/p95/p99",
              f"{pct(every, 50):.0f}/{pct(every, 95):.0f}/{pct(every, 99):.0f} ms"))
    print(row("polling endpoints p95", f"{pct(polling, 95):.0f} ms", "target < 300 ms",
              pct(polling, 95) < 300))
    print(row("5xx (client / server /metrics)", f"{fivexx} / {server_errors}", "target 0",
              fivexx == 0 and server_errors == 0))
    print(row("4xx / transport errors", f"{unexpected} / {rec.transport_errors}", "target 0",
              unexpected == 0 and rec.transport_errors == 0))
    missed = (fivexx or server_errors or unexpected or rec.transport_errors
              or pct(polling, 95) >= 300 or pct(single, 95) >= 15)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
