"""B10: webhook delivery — sign + POST + record attempt — from one delivery pump (one worker).

50 loopback endpoints answer after 50 ms (asyncio servers in a subprocess, so they do not share
our GIL), plus one endpoint that never answers (it hits the 15 s timeout). Phases:
  1. backlog: 20,000 events → deliveries/s;
  2. the same with half of the endpoints answering 500 (each failure is recorded and scheduled);
  3. steady arrivals (BENCH_WEBHOOK_RATE/s for 10 s) → enqueue → first attempt p50/p99.
Targets: ≥ 500 deliveries/s, p99 < 1 s, and the hanging endpoint never stalls the others.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batchrouter.db import utcnow
from bench.common import bench_app, row, tmpdir

EVENTS = int(os.environ.get("BENCH_WEBHOOK_EVENTS", "20000"))
ENDPOINTS = 50
RATE = int(os.environ.get("BENCH_WEBHOOK_RATE", "300"))
KEY = "bench"  # bench_app's SECRET_KEY: the endpoints' secrets are sealed under it

RECEIVERS = textwrap.dedent("""
    import asyncio, sys
    DELAY = 0.05
    async def handle(reader, writer, status):
        try:
            while True:
                head = await reader.readuntil(b"\\r\\n\\r\\n")
                length = 0
                for line in head.split(b"\\r\\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                if status == 0:
                    await asyncio.sleep(3600)  # the hanging receiver
                await asyncio.sleep(DELAY)
                writer.write(b"HTTP/1.1 %d X\\r\\nContent-Length: 2\\r\\n\\r\\nok" % status)
                await writer.drain()
        except Exception:
            writer.close()
    async def main():
        ports = []
        for status in [int(s) for s in sys.argv[1:]]:
            server = await asyncio.start_server(
                lambda r, w, s=status: handle(r, w, s), "127.0.0.1", 0, backlog=1024)
            ports.append(server.sockets[0].getsockname()[1])
        print(" ".join(map(str, ports)), flush=True)
        await asyncio.Event().wait()
    asyncio.run(main())
""")


def start_receivers(statuses: list[int]) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen([sys.executable, "-c", RECEIVERS, *map(str, statuses)],
                            stdout=subprocess.PIPE, text=True)
    return proc, [int(p) for p in proc.stdout.readline().split()]


def make_endpoints(db, workspace_id: str, ports: list[int]) -> list[str]:
    from batchrouter.models import WebhookEndpoint
    from batchrouter.webhooks.endpoints import generate_secret, seal

    ids = []
    with db.session() as s:
        for i, port in enumerate(ports):
            e = WebhookEndpoint(workspace_id=workspace_id, batch_id=f"bench-{i}",
                                url=f"http://127.0.0.1:{port}/hook",
                                secret=seal(KEY, generate_secret()))
            s.add(e)
            s.flush()
            ids.append(e.id)
    return ids


def add_events(db, workspace_id: str, endpoint_ids: list[str], n: int) -> None:
    """n events, round robin over the endpoints, through events._record (what emit writes)."""
    from batchrouter.models import WebhookEndpoint
    from batchrouter.webhooks.events import _record

    with db.session() as s:
        targets = [s.get(WebhookEndpoint, e) for e in endpoint_ids]
        for i in range(n):
            _record(s, workspace_id, f"bench-{i}", "batch.progress",
                    {"batch_id": f"bench-{i}", "status": "processing", "counts": {"total": 1}},
                    [targets[i % len(targets)]])


def settings(app):
    from batchrouter.webhooks.delivery import Settings

    return Settings(allow_private=True, base_url="http://127.0.0.1", secret_key=KEY)


def reset(db) -> None:
    from sqlalchemy import delete

    from batchrouter.models import OutboxMessage, WebhookAttempt, WebhookDelivery, WebhookEvent
    with db.session() as s:
        for model in (WebhookAttempt, WebhookDelivery, WebhookEvent, OutboxMessage):
            s.execute(delete(model))


def first_attempt_latencies(db) -> list[float]:
    from sqlalchemy import select

    from batchrouter.models import WebhookAttempt, WebhookDelivery
    with db.session() as s:
        rows = s.execute(select(WebhookDelivery.created_at, WebhookAttempt.started_at)
                         .join(WebhookAttempt, WebhookAttempt.delivery_id == WebhookDelivery.id)
                         .where(WebhookAttempt.number == 1)).all()
    return sorted((b - a).total_seconds() for a, b in rows)


def backlog(app, db, workspace_id, ids, hang_id, label: str) -> None:
    from batchrouter.webhooks.delivery import pump

    reset(db)
    add_events(db, workspace_id, [hang_id], 4)
    add_events(db, workspace_id, ids, EVENTS)
    started = utcnow()
    stats = pump(db, settings(app))
    done, last = others_finished(db, hang_id)
    rate = done / (last - started).total_seconds()
    print(row(f"{label}: {done:,} deliveries", f"{rate:,.0f}/s", "≥ 500/s", rate >= 500))
    print(row("  outcomes", ", ".join(f"{k}={v}" for k, v in sorted(stats.outcomes.items()))))


def others_finished(db, hang_id):
    """Attempts to every endpoint but the hanging one, and when the last of them ended (the
    pump itself waits for the hanging requests' 15 s timeout before returning)."""
    from datetime import timedelta

    from sqlalchemy import select

    from batchrouter.models import WebhookAttempt, WebhookDelivery
    with db.session() as s:
        rows = s.execute(select(WebhookAttempt.started_at, WebhookAttempt.latency_ms)
                         .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
                         .where(WebhookDelivery.endpoint_id != hang_id)).all()
    return len(rows), max(a + timedelta(milliseconds=ms) for a, ms in rows)


def steady(app, db, workspace_id, ids, hang_id) -> None:
    """Events arrive at RATE/s for 10 s while pumps run back to back (what RQ does)."""
    from batchrouter.webhooks.delivery import pump

    reset(db)
    add_events(db, workspace_id, [hang_id], 4)
    stop = threading.Event()

    def pumps():
        while not stop.is_set():
            if pump(db, settings(app)).attempts == 0:
                time.sleep(0.01)
    runner = threading.Thread(target=pumps)
    runner.start()
    for _tick in range(100):
        began = time.perf_counter()
        add_events(db, workspace_id, ids, RATE // 10)
        time.sleep(max(0.0, 0.1 - (time.perf_counter() - began)))
    time.sleep(2)
    stop.set()
    runner.join()
    lat = [x for x in first_attempt_latencies(db)]
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
    print(row(f"steady {RATE}/s: enqueue → first attempt p50", f"{p50 * 1000:,.0f} ms"))
    print(row(f"steady {RATE}/s: enqueue → first attempt p99", f"{p99 * 1000:,.0f} ms",
              "< 1 s", p99 < 1.0))


def main() -> None:
    tmp = tmpdir()
    app, _secret, workspace_id = bench_app(tmp)
    db = app.extensions["batchrouter"].db
    db.writer = True
    print("B10 webhooks (one pump, 64 threads, ≤ 4 in flight per endpoint)")
    receivers, ports = start_receivers([200] * ENDPOINTS + [500] * ENDPOINTS + [0])
    try:
        ok = make_endpoints(db, workspace_id, ports[:ENDPOINTS])
        failing = make_endpoints(db, workspace_id, ports[ENDPOINTS:2 * ENDPOINTS])
        [hang] = make_endpoints(db, workspace_id, ports[-1:])
        backlog(app, db, workspace_id, ok, hang, f"{EVENTS:,} events, 50 endpoints")
        half = ok[:ENDPOINTS // 2] + failing[:ENDPOINTS // 2]
        backlog(app, db, workspace_id, half, hang, "half of the endpoints failing")
        steady(app, db, workspace_id, ok, hang)
    finally:
        receivers.kill()


if __name__ == "__main__":
    main()
