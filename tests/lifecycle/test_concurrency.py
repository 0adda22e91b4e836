"""Parallel creates against one balance (SPEC §8 "50 parallel creates against a balance that
covers 10 produce exactly 10 batches"; checklist B4 #2). Runs on SQLite and PostgreSQL."""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from batchrouter import batches, ledger, money
from batchrouter.models import Batch, LedgerTransaction, Quote, Reservation
from tests.factories import SETTINGS, make_key, make_user, read, workspace_of
from tests.lifecycle.helpers import chat_items, create, quote

pytestmark = pytest.mark.pg


@pytest.fixture
def app_overrides(tmp_path):
    return {"BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage")}


def in_parallel(app, calls):
    """Run each call(client) in its own thread with its own test client, all released at once."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(index, call):
        client = app.test_client()
        barrier.wait()
        try:
            response = call(client)
            results[index] = (response.status_code, response.get_json())
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[index] = (None, repr(exc))

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def funded_workspace(session, db, client, items, quotes_needed: int, covers: int):
    """A workspace with no starter credit, `quotes_needed` quotes of `items`, and exactly
    `covers` × one quote's high estimate of purchased credit."""
    user = make_user(session, settings=replace(SETTINGS, starter_credits=0))
    ws = workspace_of(session, user)
    _key, secret = make_key(session, user)
    quotes = [quote(client, secret, items) for _ in range(quotes_needed)]
    highs = {q["pricing_estimate"]["high"] for q in quotes}
    assert len(highs) == 1, "identical manifests must quote the same high"
    high = money.parse(highs.pop())
    with db.sessionmaker() as s:
        ledger.grant(s, ws, covers * high, kind="purchase", reason="exact cover",
                     idempotency_key=f"cover:{ws}")
        s.commit()
    return ws, secret, quotes, high


def test_fifty_parallel_creates_against_a_balance_for_ten(app, client, session, db,
                                                           seeded_catalog):
    items = chat_items(3)
    ws, secret, quotes, high = funded_workspace(session, db, client, items, 50, 10)
    assert read(db, lambda s: ledger.balances(s, ws)).available == 10 * high

    results = in_parallel(app, [lambda c, q=q: create(c, secret, items, q["id"])
                                for q in quotes])

    statuses = Counter(status for status, _body in results)
    assert statuses == {201: 10, 402: 40}, results
    for status, body in results:
        if status == 402:
            assert body["error"]["code"] == "insufficient_credits"
            assert money.parse(body["error"]["details"]["shortfall"]) == high
    created = {body["id"] for status, body in results if status == 201}

    def state(s):
        return (ledger.balances(s, ws), ledger.verify_balances(s),
                set(s.scalars(select(Batch.id).where(Batch.workspace_id == ws))),
                s.scalar(select(func.count()).select_from(Reservation)),
                s.scalar(select(func.count()).select_from(LedgerTransaction)
                         .where(LedgerTransaction.kind == "reserve")),
                Counter(s.scalars(select(Quote.status).where(Quote.workspace_id == ws))))

    balances, problems, batch_ids, reservations, reserve_txns, quote_statuses = read(db, state)
    assert batch_ids == created and len(created) == 10
    assert reservations == reserve_txns == 10
    assert balances == ledger.Balances(available=0, reserved=10 * high, spent=0)
    assert problems == []
    # The 40 refused creates left their quotes usable (nothing was accepted or held for them).
    assert quote_statuses == {"accepted": 10, "open": 40}


def race_one_quote(app, client, session, db, monkeypatch, copies=6):
    """`copies` creates of one quote, all past the quote check before any reserves (the
    interleaving a retry storm makes; forced here so that the outcome does not depend on
    thread scheduling)."""
    items = chat_items(3)
    ws, secret, [q], high = funded_workspace(session, db, client, items, 1, 10)
    gate = threading.Barrier(copies)
    real_reserve = batches.ledger.reserve

    def reserve(*args, **kwargs):
        try:
            gate.wait(timeout=3)
        except threading.BrokenBarrierError:
            pass  # a create that no longer reaches reserve() must not hang the others
        return real_reserve(*args, **kwargs)

    monkeypatch.setattr(batches.ledger, "reserve", reserve)
    results = in_parallel(app, [lambda c: create(c, secret, items, q["id"])] * copies)
    return ws, high, results


def test_the_same_quote_created_in_parallel_makes_one_batch_and_one_hold(app, client, session,
                                                                         db, seeded_catalog,
                                                                         monkeypatch):
    """A double-submitted create (retries racing) is one batch and one reservation."""
    ws, high, results = race_one_quote(app, client, session, db, monkeypatch)
    statuses = Counter(status for status, _body in results)
    assert statuses[201] == 1, results
    made = read(db, lambda s: s.scalars(select(Batch.id).where(Batch.workspace_id == ws)).all())
    assert len(made) == 1
    balances = read(db, lambda s: ledger.balances(s, ws))
    assert balances == ledger.Balances(available=9 * high, reserved=high, spent=0)
    assert read(db, ledger.verify_balances) == []


def test_the_losers_of_a_same_quote_race_hear_quote_used(app, client, session, db,
                                                         seeded_catalog, monkeypatch):
    _ws, _high, results = race_one_quote(app, client, session, db, monkeypatch)
    losers = [(status, body) for status, body in results if status != 201]
    assert len(losers) == 5
    assert all(status == 409 and body["error"]["code"] == "quote_used"
               for status, body in losers), losers


def test_parallel_creates_with_one_idempotency_key_execute_once(app, client, session, db,
                                                                seeded_catalog):
    """Checklist B4 #6: the same Idempotency-Key sent concurrently runs the create once; the
    others replay it or are told it is in progress (409, Retry-After)."""
    items = chat_items(3)
    ws, secret, [q], high = funded_workspace(session, db, client, items, 1, 10)
    headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": "retry-storm"}

    def post(c):
        return c.post("/v1/batches", json={"quote_id": q["id"], "items": items},
                      headers=headers)

    results = in_parallel(app, [post] * 8)
    created = {body["id"] for status, body in results if status == 201}
    assert len(created) == 1, results
    for status, body in results:
        assert status in (201, 409), (status, body)
        if status == 409:
            assert body["error"]["code"] == "idempotency_in_progress"
    assert read(db, lambda s: s.scalar(select(func.count()).select_from(Batch)
                                       .where(Batch.workspace_id == ws))) == 1
    assert read(db, lambda s: ledger.balances(s, ws)) == \
        ledger.Balances(available=9 * high, reserved=high, spent=0)
    # Once the first request finished, the key replays its response.
    again = post(client)
    assert again.status_code == 201 and again.get_json()["id"] in created
