"""kill -9 of a real worker in the middle of a 2,000-item batch (checklist B5 #1/#2, SPEC §11):
the sweeper re-queues the dead worker's unit once its lease lapses, another worker finishes it,
and every item is delivered, counted and charged exactly once."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from batchrouter import ledger, money
from batchrouter.finalize import item_counts
from batchrouter.models import Batch, Item, LedgerEntry, LedgerTransaction, Reservation, WorkUnit
from batchrouter.models.batches import BATCH_TERMINAL
from tests.conftest import wait_for
from tests.factories import bearer, make_key, make_user, read, workspace_of
from tests.lifecycle.helpers import chat_items, quote_and_create
from tests.lifecycle.support import (
    BATCH_LANE,
    SYNC_LANE,
    artifacts,
    assert_counts_match_items,
    balances,
    batch_row,
    drive,
    items_of,
    only_sync_lane,
    units_of,
)

pytestmark = pytest.mark.pg

TOTAL = 2000


CRASH = {"BATCHROUTER_SANDBOX_LATENCY_MS": 3,  # 1,000 items per unit ≈ 3 s per unit
         "BATCHROUTER_UNIT_LEASE": 3, "BATCHROUTER_SWEEP_INTERVAL": 1,
         "BATCHROUTER_SWEEP_STALE_AFTER": 2, "BATCHROUTER_SCHEDULER_TICK": 0.2,
         "BATCHROUTER_RETRY_BASE_DELAY": 0.0, "BATCHROUTER_POLL_INTERVAL": 0.2}


@pytest.fixture
def app_overrides(tmp_path, request):
    return {"BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage"),
            **getattr(request, "param", CRASH)}


def test_kill_9_mid_batch_then_another_worker_finishes_exactly_once(
        app, client, session, db, seeded_catalog, worker_process):
    only_sync_lane(db)
    user = make_user(session)
    ws = workspace_of(session, user)
    _key, secret = make_key(session, user)
    items = chat_items(TOTAL)
    q, batch = quote_and_create(client, secret, items)
    assert [lane["lane"] for lane in q["quote_lanes"]["selected"]] == [SYNC_LANE]
    batch_id = batch["id"]
    before = read(db, lambda s: ledger.balances(s, ws))
    assert before.reserved == money.parse(q["pricing_estimate"]["high"])

    def succeeded():
        return read(db, lambda s: s.get(Batch, batch_id).succeeded)

    first = worker_process()
    wait_for(lambda: succeeded() >= 200, timeout=20, interval=0.05)
    first.kill(9)
    done_at_kill = succeeded()
    assert done_at_kill < TOTAL, "the worker finished before it could be killed"
    # The dead worker's lease still holds its unit: nothing moves on its own.
    leased = read(db, lambda s: s.scalars(select(WorkUnit).where(
        WorkUnit.batch_id == batch_id, WorkUnit.leased_by.is_not(None))).all())
    assert len(leased) == 1 and leased[0].status == "running"
    orphan = leased[0].id

    worker_process()
    wait_for(lambda: read(db, lambda s: s.get(Batch, batch_id).status in BATCH_TERMINAL),
             timeout=30, interval=0.2)

    body = client.get(f"/v1/batches/{batch_id}", headers=bearer(secret)).get_json()
    assert body["status"] == "completed", body
    assert body["counts"] == {"total": TOTAL, "succeeded": TOTAL, "failed": 0, "cancelled": 0,
                              "expired": 0, "running": 0, "pending": 0}
    counted = read(db, lambda s: item_counts(s, batch_id))
    assert {k: v for k, v in counted.items() if v} == {"succeeded": TOTAL}

    # Results: every item exactly once, none in the errors file.
    results, errors = artifacts(client, secret, batch_id)
    assert len(results) == TOTAL
    assert {r["customer_item_id"] for r in results} == {i["customer_item_id"] for i in items}
    assert errors == []
    # Each item ran to a result once: one attempt, one charge.
    logs = read(db, lambda s: s.execute(select(Item.attempt_log, Item.charged_micros)
                                        .where(Item.batch_id == batch_id)).all())
    assert all(len(log) == 1 and log[0]["outcome"] == "succeeded" for log, _c in logs)
    charged = sum(c for _log, c in logs)
    assert charged == money.parse(body["cost_usd"]["settled"]) > 0

    # One settlement transaction per work unit, keyed by the unit, summing to the charge.
    units = read(db, lambda s: s.scalars(select(WorkUnit.id)
                                         .where(WorkUnit.batch_id == batch_id)).all())
    settles = read(db, lambda s: s.execute(
        select(LedgerTransaction.idempotency_key, func.sum(LedgerEntry.amount))
        .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
        .where(LedgerTransaction.kind == "settle", LedgerTransaction.workspace_id == ws,
               LedgerEntry.amount > 0)
        .group_by(LedgerTransaction.idempotency_key)).all())
    assert sorted(key for key, _amount in settles) == \
        sorted(f"settle:{batch_id}:{unit}" for unit in units)
    assert sum(int(amount) for _key, amount in settles) == charged
    # The orphaned unit was picked up again (by the sweeper's re-queue), not lost.
    assert read(db, lambda s: s.get(WorkUnit, orphan).attempts) >= 2

    after = read(db, lambda s: ledger.balances(s, ws))
    assert after == ledger.Balances(available=before.available + before.reserved - charged,
                                    reserved=0, spent=charged)
    assert read(db, ledger.verify_balances) == []
    reservation = read(db, lambda s: s.scalars(select(Reservation)
                                               .where(Reservation.batch_id == batch_id)).one())
    assert reservation.closed_at is not None
    assert reservation.released == reservation.amount - charged


@pytest.mark.parametrize("app_overrides", [{
    **CRASH, "BATCHROUTER_SANDBOX_LATENCY_MS": 1, "BATCHROUTER_SANDBOX_BATCH_DELAY": 4.0,
    "BATCHROUTER_POLL_INTERVAL": 0.3}], indirect=True)
def test_kill_9_while_provider_batches_run_resumes_polling_without_resubmitting(
        app, client, session, db, seeded_catalog, worker_process):
    """Native batch lane: the provider batches were created before the crash; the next worker
    polls those same batches (no second submission, no second charge)."""
    user = make_user(session)
    ws = workspace_of(session, user)
    _key, secret = make_key(session, user)
    items = chat_items(TOTAL)
    _q, batch = quote_and_create(client, secret, items)
    batch_id = batch["id"]
    before = balances(db, ws)

    first = worker_process()
    wait_for(lambda: [u.status for u in units_of(db, batch_id)] == ["submitted"] * 2,
             timeout=20, interval=0.05)
    handles = {u.id: u.handle["id"] for u in units_of(db, batch_id)}
    first.kill(9)
    assert batch_row(db, batch_id).succeeded == 0

    worker_process()
    wait_for(lambda: batch_row(db, batch_id).status in BATCH_TERMINAL, timeout=30, interval=0.2)
    assert batch_row(db, batch_id).status == "completed"
    assert {u.id: u.handle["id"] for u in units_of(db, batch_id)} == handles
    assert assert_counts_match_items(db, batch_id)["succeeded"] == TOTAL
    rows = items_of(db, batch_id)
    assert all(len(i.attempt_log) == 1 and i.attempt_log[0]["lane"] == BATCH_LANE for i in rows)
    charged = sum(i.charged_micros for i in rows)
    assert batch_row(db, batch_id).settled_micros == charged
    results, errors = artifacts(client, secret, batch_id)
    assert sorted(r["customer_item_id"] for r in results) == \
        sorted(i["customer_item_id"] for i in items) and errors == []
    assert balances(db, ws) == ledger.Balances(before.available + before.reserved - charged,
                                               0, charged)
    assert read(db, ledger.verify_balances) == []


@pytest.mark.parametrize("app_overrides", [{
    **CRASH, "BATCHROUTER_SANDBOX_LATENCY_MS": 0, "BATCHROUTER_SWEEP_STALE_AFTER": 1}],
    indirect=True)
def test_redis_flushed_after_create_the_sweeper_rebuilds_the_queue(app, client, session, db,
                                                                  redis, seeded_catalog,
                                                                  worker, monkeypatch):
    """Postgres is the source of truth: jobs lost from Redis are re-queued by the sweeper."""
    from batchrouter import routing
    from jobs import maintenance, runtime

    monkeypatch.setattr(routing, "SANDBOX_UNIT", 10)
    user = make_user(session)
    ws = workspace_of(session, user)
    _key, secret = make_key(session, user)
    _q, batch = quote_and_create(client, secret, chat_items(30))
    redis.flushdb()  # every dispatch job is gone
    worker()
    assert batch_row(db, batch["id"]).status == "queued", "nothing left to run"

    time.sleep(app.config["BATCHROUTER_SWEEP_STALE_AFTER"] + 0.2)
    runtime.install(app)
    assert maintenance.sweep_batches()["requeued"] == 3
    finished = drive(db, worker, batch["id"])
    assert finished.status == "completed" and finished.succeeded == 30
    assert_counts_match_items(db, batch["id"])
    assert balances(db, ws).reserved == 0
    assert read(db, ledger.verify_balances) == []
