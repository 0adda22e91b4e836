"""Scale test (issue 11.5): PostgreSQL, 2 gunicorn processes, 3 `flask worker` processes,
5 batches of 2,000 sandbox items created concurrently through the HTTP API. While they run,
the worker holding a work unit is killed with SIGKILL and a new worker is started.

Checks, and exits non-zero when one fails: every batch completes; every item ends exactly
once (terminal, counters equal to the item rows, at most one successful attempt per item);
settlements match (batch totals = item charges = ledger settle entries; reservations closed;
every ledger account equals its entries); no PostgreSQL deadlock; the killed worker's unit
was finished by the others.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cluster import Cluster, seed_workspaces
from bench.common import row

BATCHES = int(os.environ.get("BENCH_SCALE_BATCHES", "5"))
ITEMS = int(os.environ.get("BENCH_SCALE_ITEMS", "2000"))
NATIVE = 2  # the first batches run on the sandbox native-batch lane, the rest on sync
SETTINGS = {
    # A killed worker's unit is re-queued once its lease lapses and the sweeper sees it.
    "BATCHROUTER_UNIT_LEASE": "20", "BATCHROUTER_SWEEP_INTERVAL": "5",
    "BATCHROUTER_SWEEP_STALE_AFTER": "10", "BATCHROUTER_SCHEDULER_TICK": "1",
    # Per-item provider latency and a few transient failures (retried, some fall back).
    "BATCHROUTER_SANDBOX_LATENCY_MS": "2", "BATCHROUTER_SANDBOX_FAILURE_RATE": "0.02",
    "BATCHROUTER_SANDBOX_BATCH_DELAY": "3", "BATCHROUTER_POLL_INTERVAL": "1",
    "BATCHROUTER_RETRY_BASE_DELAY": "0.5",
    "BATCHROUTER_API_LIMIT_KEY": "100000 per minute",
    "BATCHROUTER_API_LIMIT_WORKSPACE": "100000 per minute",
}


def items(batch: int) -> list[dict]:
    return [{"customer_item_id": f"b{batch}-{i}", "operation": "responses",
             "model": "sandbox-chat",
             "input": {"messages": [{"role": "user", "content": f"Batch {batch}, ticket {i}: "
                                     "is this a refund request?"}], "max_output_tokens": 32}}
            for i in range(ITEMS)]


def quote_all(cluster: Cluster, app, owners: list[str]) -> list[tuple[str, list, str]]:
    """Quotes for every batch: the first NATIVE on the batch lane, the rest on sync (the
    operator disables the sandbox batch offering in between; locked quotes keep their lane)."""
    from batchrouter import catalog
    from batchrouter.models import Offering

    plans = []
    for n in range(BATCHES):
        if n == NATIVE:
            with app.app_context(), app.extensions["batchrouter"].db.session() as s:
                offering = s.query(Offering).filter_by(provider_slug="sandbox",
                                                       model_slug="sandbox-chat",
                                                       mode="batch").one()
                offering.enabled = False  # what Operator → Catalog does
                catalog.bump_version(s)
        payload = items(n)
        secret = owners[n % len(owners)]
        response = requests.post(f"{cluster.base_url}/v1/quotes/model", json={"items": payload},
                                 headers={"Authorization": f"Bearer {secret}"}, timeout=120)
        response.raise_for_status()
        plans.append((secret, payload, response.json()["id"]))
    return plans


def create_concurrently(cluster: Cluster, plans) -> list[str]:
    ids, errors = [None] * len(plans), []

    def create(n, secret, payload, quote_id):
        response = requests.post(f"{cluster.base_url}/v1/batches",
                                 json={"quote_id": quote_id, "items": payload},
                                 headers={"Authorization": f"Bearer {secret}"}, timeout=300)
        if response.status_code != 201:
            errors.append((n, response.status_code, response.text[:300]))
        else:
            ids[n] = response.json()["id"]

    threads = [threading.Thread(target=create, args=(n, *plan)) for n, plan in enumerate(plans)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"batch creation failed: {errors}")
    return ids


def progress(app, batch_ids) -> tuple[int, int]:
    """(items finished, batches terminal)."""
    from sqlalchemy import func, select

    from batchrouter.models import Batch
    from batchrouter.models.batches import BATCH_TERMINAL

    with app.extensions["batchrouter"].db.session() as s:
        done = s.scalar(select(func.sum(Batch.succeeded + Batch.failed))
                        .where(Batch.id.in_(batch_ids))) or 0
        terminal = s.scalar(select(func.count()).select_from(Batch)
                            .where(Batch.id.in_(batch_ids), Batch.status.in_(BATCH_TERMINAL)))
    return int(done), int(terminal)


def busy_worker(cluster: Cluster, app) -> tuple[str, str] | None:
    """A worker process that holds a work-unit lease right now: (process name, unit id)."""
    from sqlalchemy import select

    from batchrouter.models import WorkUnit

    pids = {str(p.pid): n for n, p in cluster.procs.items()
            if n.startswith("worker-") and p.poll() is None}
    with app.extensions["batchrouter"].db.session() as s:
        for unit_id, holder in s.execute(select(WorkUnit.id, WorkUnit.leased_by)
                                         .where(WorkUnit.leased_by.is_not(None))):
            name = pids.get(holder.rsplit(".", 1)[-1])
            if name:
                return name, unit_id
    return None


def verify(app, batch_ids) -> list[str]:
    """Every check of the docstring; returns the failures (empty when all hold)."""
    from sqlalchemy import func, select

    from batchrouter import ledger
    from batchrouter.models import (
        Batch,
        Item,
        LedgerAccount,
        LedgerEntry,
        LedgerTransaction,
        Reservation,
        WorkUnit,
    )
    from batchrouter.models.batches import ITEM_TERMINAL, UNIT_TERMINAL

    problems = []
    with app.extensions["batchrouter"].db.session() as s:
        for batch_id in batch_ids:
            b = s.get(Batch, batch_id)
            if b.status != "completed":
                problems.append(f"{batch_id}: status {b.status}")
            by_status = dict(s.execute(select(Item.status, func.count())
                                       .where(Item.batch_id == batch_id)
                                       .group_by(Item.status)).all())
            if sum(by_status.values()) != ITEMS or set(by_status) - set(ITEM_TERMINAL):
                problems.append(f"{batch_id}: items {by_status}")
            for status in ("succeeded", "failed", "pending", "running"):
                if getattr(b, status) != by_status.get(status, 0):
                    problems.append(f"{batch_id}: counter {status}={getattr(b, status)} "
                                    f"but {by_status.get(status, 0)} items")
            for item_id, status, log in s.execute(select(Item.id, Item.status, Item.attempt_log)
                                                  .where(Item.batch_id == batch_id)):
                wins = sum(1 for a in log if a["outcome"] == "succeeded")
                if wins != (status == "succeeded"):
                    problems.append(f"{item_id}: {status} with {wins} successful attempts")
            charged = s.scalar(select(func.coalesce(func.sum(Item.charged_micros), 0))
                               .where(Item.batch_id == batch_id, Item.status == "succeeded"))
            settled = s.scalar(
                select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
                .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
                .where(LedgerTransaction.kind == "settle", LedgerAccount.kind == "spent",
                       LedgerTransaction.idempotency_key.like(f"settle:{batch_id}:%")))
            if not (b.settled_micros == charged == settled):
                problems.append(f"{batch_id}: settled {b.settled_micros}, items {charged}, "
                                f"ledger {settled}")
            rsv = s.scalar(select(Reservation).where(Reservation.batch_id == batch_id))
            if rsv.closed_at is None or rsv.settled + rsv.released != rsv.amount \
                    or rsv.settled != settled:
                problems.append(f"{batch_id}: reservation {rsv.amount} = settled "
                                f"{rsv.settled} + released {rsv.released}, closed "
                                f"{rsv.closed_at}")
            open_units = s.scalar(select(func.count()).select_from(WorkUnit).where(
                WorkUnit.batch_id == batch_id, WorkUnit.status.not_in(UNIT_TERMINAL)))
            unsettled = s.scalar(select(func.count()).select_from(WorkUnit).where(
                WorkUnit.batch_id == batch_id, WorkUnit.settled.is_(False)))
            if open_units or unsettled:
                problems.append(f"{batch_id}: {open_units} open / {unsettled} unsettled units")
        problems += ledger.verify_balances(s)
    return problems


def main() -> int:
    settings = dict(SETTINGS)
    cluster = Cluster("scale", settings)
    started_at = time.strftime("%H:%M:%S")
    try:
        cluster.start_redis()
        where = cluster.start_postgres()
        cluster.migrate()
        app = cluster.app()
        owners = [secrets[0] for _ws, secrets in seed_workspaces(app, 2)]
        shape = cluster.start_web(processes=2)  # issue 11: two web processes
        for _ in range(3):
            cluster.start_worker()
        load = os.getloadavg()[0]
        plans = quote_all(cluster, app, owners)
        deadlocks_before = cluster.pg_stat("deadlocks")
        t0 = time.perf_counter()
        batch_ids = create_concurrently(cluster, plans)
        created = time.perf_counter() - t0
        total = BATCHES * ITEMS
        killed = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            done, terminal = progress(app, batch_ids)
            if killed is None and done >= total * 0.2:
                target = busy_worker(cluster, app)
                if target:
                    cluster.kill(target[0])  # SIGKILL: no cleanup, its lease must lapse
                    killed = (*target, done, time.perf_counter() - t0, cluster.start_worker())
            if terminal == BATCHES:
                break
            time.sleep(0.25)
        wall = time.perf_counter() - t0
        problems = verify(app, batch_ids)
        if killed is None:
            problems.append("no worker was killed (none held a lease after 20 % progress)")
        deadlocks = cluster.pg_stat("deadlocks") - deadlocks_before
        logged = cluster.all_logs().count("deadlock detected")
        if deadlocks or logged:
            problems.append(f"{deadlocks} PostgreSQL deadlocks, {logged} in the logs")
        print(f"bench/scale.py — PostgreSQL ({where}), gunicorn {shape}, 3 workers (+1 after a "
              f"SIGKILL), {BATCHES} × {ITEMS:,} sandbox items; load average at start "
              f"{load:.1f} on {os.cpu_count()} cores; started {started_at} UTC")
        print(row("batches created concurrently (API)", f"{created:.2f} s"))
        print(row(f"{total:,} items created → all batches completed", f"{wall:.1f} s"))
        print(row("items/s end to end", f"{total / wall:,.0f}"))
        if killed:
            print(row(f"SIGKILL {killed[0]} (held {killed[1]}) at", f"{killed[3]:.1f} s",
                      f"{killed[2]:,} items done; started {killed[4]}"))
        print(row("PostgreSQL deadlocks", str(deadlocks), "target 0", deadlocks == 0))
        print(row("items ended once, counters, settlements, ledger", "ok" if not problems
                  else f"{len(problems)} problems", "", not problems))
        for problem in problems[:20]:
            print("   !", problem)
        return 1 if problems else 0
    finally:
        cluster.stop(keep=os.environ.get("BENCH_KEEP") == "1")


if __name__ == "__main__":
    sys.exit(main())
