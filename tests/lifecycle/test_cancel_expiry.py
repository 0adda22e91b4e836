"""Cancel and SLA expiry (SPEC §5): finished items are delivered and billed, the rest are
cancelled / expired in the errors file, and the reservation is released in full."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from batchrouter import ledger, money, routing
from batchrouter.db import utcnow
from batchrouter.models import Batch
from batchrouter.models.batches import BATCH_TERMINAL
from batchrouter.providers.sandbox import SandboxProvider
from jobs import dispatch as dispatch_jobs
from jobs import maintenance, runtime
from tests.conftest import wait_for
from tests.factories import bearer, make_key, make_user, read, workspace_of
from tests.lifecycle.helpers import chat_items, quote_and_create
from tests.lifecycle.support import (
    BATCH_LANE,
    ERROR_LINE_KEYS,
    RESULT_LINE_KEYS,
    SYNC_LANE,
    artifacts,
    assert_counts_match_items,
    balances,
    batch_row,
    get_json,
    items_of,
    only_sync_lane,
    units_of,
)

BASE = {"BATCHROUTER_SANDBOX_BATCH_DELAY": 0.0, "BATCHROUTER_POLL_INTERVAL": 0.0,
        "BATCHROUTER_RETRY_BASE_DELAY": 0.0, "BATCHROUTER_SCHEDULER_TICK": 0.2}
SLOW = {**BASE, "BATCHROUTER_SANDBOX_LATENCY_MS": 5}


@pytest.fixture
def app_overrides(tmp_path, request):
    return {"BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage"),
            **getattr(request, "param", BASE)}


@pytest.fixture
def owner(session):
    user = make_user(session)
    _key, secret = make_key(session, user)
    return workspace_of(session, user), secret


def assert_released(db, ws, before: ledger.Balances, charged: int) -> None:
    """Nothing stays reserved; exactly the delivered items were paid for."""
    after = balances(db, ws)
    assert after == ledger.Balances(available=before.available + before.reserved - charged,
                                    reserved=0, spent=charged)
    assert read(db, ledger.verify_balances) == []


def assert_error_lines(lines: list[dict], status: str, code: str) -> None:
    for line in lines:
        assert set(line) == ERROR_LINE_KEYS, line
        assert line["status"] == status and line["attempts"] == 0
        assert line["error"]["code"] == code and line["error"]["retryable"] is False
        assert isinstance(line["error"]["message"], str) and line["error"]["message"]


# --- cancel --------------------------------------------------------------------------------

@pytest.mark.pg
def test_cancel_before_the_worker_runs_releases_everything(app, client, db, owner,
                                                           seeded_catalog, worker):
    ws, secret = owner
    items = chat_items(20)
    _q, batch = quote_and_create(client, secret, items)
    before = balances(db, ws)
    assert before.reserved > 0

    response = client.post(f"/v1/batches/{batch['id']}/cancel", headers=bearer(secret))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] in ("cancelling", "cancelled")

    worker()
    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert body["status"] == "cancelled", body
    assert body["counts"]["cancelled"] == 20 and body["counts"]["succeeded"] == 0
    assert body["progress_percent"] == 100 and body["cost_usd"]["settled"] == "0.000000"
    assert_counts_match_items(db, batch["id"])
    results, errors = artifacts(client, secret, batch["id"])
    assert results == []
    assert [line["customer_item_id"] for line in errors] == \
        [item["customer_item_id"] for item in items]
    assert_error_lines(errors, "cancelled", "batch_cancelled")
    assert_released(db, ws, before, 0)
    # No provider call was made for a cancelled batch.
    assert all(item.attempt_log == [] for item in items_of(db, batch["id"]))


@pytest.mark.pg
@pytest.mark.parametrize("app_overrides", [SLOW], indirect=True)
def test_cancel_midway_delivers_and_bills_what_finished(app, client, db, owner, seeded_catalog,
                                                        worker_process, monkeypatch):
    ws, secret = owner
    only_sync_lane(db)
    monkeypatch.setattr(routing, "SANDBOX_UNIT", 100)  # 6 units of 100 items, ~0.5 s each
    items = chat_items(600)
    _q, batch = quote_and_create(client, secret, items)
    batch_id = batch["id"]
    before = balances(db, ws)

    worker_process()
    wait_for(lambda: batch_row(db, batch_id).succeeded >= 100, timeout=20, interval=0.05)
    response = client.post(f"/v1/batches/{batch_id}/cancel", headers=bearer(secret))
    assert response.status_code == 200, response.get_json()
    wait_for(lambda: batch_row(db, batch_id).status in BATCH_TERMINAL, timeout=20)

    body = get_json(client, secret, f"/v1/batches/{batch_id}")
    assert body["status"] == "cancelled", body
    counts = body["counts"]
    assert 100 <= counts["succeeded"] < 600, counts
    assert counts["succeeded"] + counts["cancelled"] == 600
    assert_counts_match_items(db, batch_id)

    results, errors = artifacts(client, secret, batch_id)
    assert len(results) == counts["succeeded"] and len(errors) == counts["cancelled"]
    assert {line["customer_item_id"] for line in results} | \
        {line["customer_item_id"] for line in errors} == {i["customer_item_id"] for i in items}
    assert all(set(line) == RESULT_LINE_KEYS and line["status"] == "succeeded"
               and line["lane"] == SYNC_LANE for line in results)
    assert_error_lines(errors, "cancelled", "batch_cancelled")

    # Delivered items are billed (each its own cost), cancelled ones cost nothing.
    rows = items_of(db, batch_id)
    charged = sum(i.charged_micros for i in rows if i.status == "succeeded")
    assert all(i.charged_micros == 0 for i in rows if i.status == "cancelled")
    assert charged == sum(money.parse(line["cost_usd"]) for line in results) > 0
    assert money.parse(body["cost_usd"]["settled"]) == charged
    assert_released(db, ws, before, charged)


@pytest.mark.pg
def test_cancel_while_a_worker_writes_is_not_a_server_error(app, client, db, owner,
                                                            seeded_catalog):
    """Deterministic form of the race a running worker makes: another connection holds the
    write lock when the cancel arrives and commits while the cancel waits (on SQLite a
    deferred read-then-write transaction would fail at once with "database is locked")."""
    _ws, secret = owner
    _q, batch = quote_and_create(client, secret, chat_items(5))
    holder = db.engine.connect()
    transaction = holder.begin()
    holder.execute(update(Batch).where(Batch.id == batch["id"])
                   .values(updated_at=utcnow()))  # a worker's write, not yet committed
    outcome = {}

    def cancel():
        outcome["response"] = app.test_client().post(f"/v1/batches/{batch['id']}/cancel",
                                                     headers=bearer(secret))

    thread = threading.Thread(target=cancel)
    thread.start()
    time.sleep(0.5)
    transaction.commit()
    holder.close()
    thread.join(30)
    assert outcome["response"].status_code == 200, outcome["response"].get_json()
    assert batch_row(db, batch["id"]).cancel_requested_at is not None


@pytest.mark.pg
def test_cancel_of_a_terminal_batch_is_a_conflict(app, client, db, owner, seeded_catalog,
                                                  worker):
    ws, secret = owner
    _q, batch = quote_and_create(client, secret, chat_items(5))
    worker()
    settled = balances(db, ws)
    response = client.post(f"/v1/batches/{batch['id']}/cancel", headers=bearer(secret))
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "batch_terminal"
    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert body["status"] == "completed" and body["counts"]["succeeded"] == 5
    assert balances(db, ws) == settled


@pytest.mark.pg
@pytest.mark.parametrize("app_overrides", [{**BASE, "BATCHROUTER_SANDBOX_BATCH_DELAY": 3600.0,
                                            "BATCHROUTER_POLL_INTERVAL": 5.0}], indirect=True)
def test_cancel_cancels_the_provider_batches_already_submitted(app, client, db, owner,
                                                               seeded_catalog, worker,
                                                               monkeypatch):
    _ws, secret = owner
    monkeypatch.setattr(routing, "SANDBOX_UNIT", 10)
    cancelled = []
    real_cancel = SandboxProvider.cancel

    def cancel(self, handle):
        cancelled.append(handle["id"])
        real_cancel(self, handle)

    monkeypatch.setattr(SandboxProvider, "cancel", cancel)
    _q, batch = quote_and_create(client, secret, chat_items(30))
    worker()  # the three units are submitted as provider batches; none is ready
    units = units_of(db, batch["id"])
    assert [u.status for u in units] == ["submitted"] * 3
    handles = sorted(u.handle["id"] for u in units)

    assert client.post(f"/v1/batches/{batch['id']}/cancel",
                       headers=bearer(secret)).status_code == 200
    worker()
    runtime.install(app)
    for unit in units:  # the polls that were still scheduled run later
        dispatch_jobs.poll_work_unit(unit.id)
    assert batch_row(db, batch["id"]).status == "cancelled"
    assert sorted(cancelled) == handles


# --- expiry --------------------------------------------------------------------------------

def run_first_unit_then_pass_the_deadline(app, db, batch_id: str) -> str:
    """One unit finishes; then the SLA deadline passes with the others still queued."""
    runtime.install(app)
    first = units_of(db, batch_id)[0]
    dispatch_jobs.run_work_unit(first.id)
    if first.mode == "batch":
        assert dispatch_jobs.poll_work_unit(first.id) == "completed"
    assert batch_row(db, batch_id).succeeded == first.item_count
    with db.session() as s:
        s.execute(update(Batch).where(Batch.id == batch_id)
                  .values(sla_deadline=utcnow() - timedelta(seconds=1)))
    found = maintenance.sweep_batches()
    assert found["expired"] == 1
    return first.id


def assert_expired_outcome(client, db, secret, ws, before, batch_id, first_unit, items):
    body = get_json(client, secret, f"/v1/batches/{batch_id}")
    assert body["status"] == "expired", body
    assert body["counts"]["succeeded"] == 10 and body["counts"]["expired"] == 20
    assert_counts_match_items(db, batch_id)
    results, errors = artifacts(client, secret, batch_id)
    first_ids = {i.customer_item_id for i in items_of(db, batch_id)
                 if i.work_unit_id == first_unit}
    assert {line["customer_item_id"] for line in results} == first_ids
    assert len(errors) == 20 and not first_ids & {line["customer_item_id"] for line in errors}
    assert_error_lines(errors, "expired", "batch_expired")
    charged = sum(money.parse(line["cost_usd"]) for line in results)
    assert money.parse(body["cost_usd"]["settled"]) == charged > 0
    assert_released(db, ws, before, charged)


@pytest.mark.pg
def test_expiry_on_native_batch_lane_delivers_finished_and_releases_the_rest(
        app, client, db, owner, seeded_catalog, worker, monkeypatch):
    ws, secret = owner
    monkeypatch.setattr(routing, "SANDBOX_UNIT", 10)
    items = chat_items(30)
    _q, batch = quote_and_create(client, secret, items)
    assert {u.lane for u in units_of(db, batch["id"])} == {BATCH_LANE}
    before = balances(db, ws)

    first = run_first_unit_then_pass_the_deadline(app, db, batch["id"])
    worker()

    assert_expired_outcome(client, db, secret, ws, before, batch["id"], first, items)


@pytest.mark.pg
def test_expiry_on_sync_lane_stops_dispatch_and_releases_the_rest(
        app, client, db, owner, seeded_catalog, worker, monkeypatch):
    ws, secret = owner
    only_sync_lane(db)
    monkeypatch.setattr(routing, "SANDBOX_UNIT", 10)
    items = chat_items(30)
    _q, batch = quote_and_create(client, secret, items)
    assert {u.lane for u in units_of(db, batch["id"])} == {SYNC_LANE}
    before = balances(db, ws)

    first = run_first_unit_then_pass_the_deadline(app, db, batch["id"])
    worker()

    assert_expired_outcome(client, db, secret, ws, before, batch["id"], first, items)
