"""Retries, permanent failures, the fallback ladder and never charging twice (SPEC §4 "what a
quote locks", §5 item errors, checklist B4 #4 / B5 #5)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from batchrouter import ledger, money, pricing
from batchrouter.models import LedgerTransaction, Offering
from batchrouter.providers.base import ItemResult, Poll, error
from batchrouter.providers.sandbox import SandboxProvider, _fails
from jobs import dispatch as dispatch_jobs
from jobs import runtime
from tests.factories import bearer, make_key, make_user, read, workspace_of
from tests.lifecycle.helpers import chat_items, quote_and_create
from tests.lifecycle.support import (
    BATCH_LANE,
    ERROR_LINE_KEYS,
    SYNC_LANE,
    artifacts,
    assert_counts_match_items,
    balances,
    drive,
    get_json,
    items_of,
    units_of,
)

pytestmark = pytest.mark.pg

# Breakers stay out of the way here (tests/providers covers them): these tests are about
# the retry policy of single items.
BASE = {"BATCHROUTER_SANDBOX_BATCH_DELAY": 0.0, "BATCHROUTER_POLL_INTERVAL": 0.0,
        "BATCHROUTER_RETRY_BASE_DELAY": 0.0, "BATCHROUTER_BREAKER_MIN_CALLS": 10_000}
FLAKY = {**BASE, "BATCHROUTER_SANDBOX_FAILURE_RATE": 0.3}
DOWN = {**BASE, "BATCHROUTER_SANDBOX_FAILURE_RATE": 1.0}


@pytest.fixture
def app_overrides(tmp_path, request):
    return {"BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage"),
            **getattr(request, "param", BASE)}


@pytest.fixture
def owner(session):
    user = make_user(session)
    _key, secret = make_key(session, user)
    return workspace_of(session, user), secret


def receipt_items(client, secret, batch_id) -> list[dict]:
    return get_json(client, secret, f"/v1/batches/{batch_id}/receipt?limit=1000")["items"]


def settle_count(db, ws) -> int:
    return read(db, lambda s: s.scalar(select(func.count()).select_from(LedgerTransaction).where(
        LedgerTransaction.workspace_id == ws, LedgerTransaction.kind == "settle")))


def expected_attempts(customer_item_id: str) -> tuple[str, int]:
    """What the deterministic sandbox (failure decided by item id and attempt number) makes of
    one item: up to 3 tries on the batch lane, then the sync lane (its last) up to the cap of
    8 attempts in all (SPEC §5)."""
    for attempt in range(1, 9):
        if not _fails(customer_item_id, str(attempt), FLAKY["BATCHROUTER_SANDBOX_FAILURE_RATE"]):
            return "succeeded", attempt
    return "failed", 8


@pytest.mark.parametrize("app_overrides", [FLAKY], indirect=True)
def test_transient_failures_are_retried_until_the_batch_completes(app, client, db, owner,
                                                                  seeded_catalog, worker):
    ws, secret = owner
    items = chat_items(40)
    _q, batch = quote_and_create(client, secret, items)
    before = balances(db, ws)
    drive(db, worker, batch["id"])

    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert body["status"] == "completed", body
    expected = {i["customer_item_id"]: expected_attempts(i["customer_item_id"]) for i in items}
    assert body["counts"]["succeeded"] == sum(o == "succeeded" for o, _n in expected.values())
    assert body["counts"]["succeeded"] >= 35
    assert_counts_match_items(db, batch["id"])
    receipt = receipt_items(client, secret, batch["id"])
    assert {r["customer_item_id"]: (r["status"], len(r["attempts"])) for r in receipt} == expected
    retried = [r for r in receipt if len(r["attempts"]) > 1]
    assert len(retried) >= 5, "a 30 % failure rate must make several items retry"
    for row in receipt:
        attempts = row["attempts"]
        assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
        assert [a["lane"] for a in attempts] == \
            ([BATCH_LANE] * 3 + [SYNC_LANE] * 5)[:len(attempts)]
        failed = attempts[:-1] if row["status"] == "succeeded" else attempts
        for attempt in failed:
            assert attempt["outcome"] == "failed"
            assert attempt["error"]["code"] == "provider_unavailable"
            assert attempt["error"]["retryable"] is True
            assert attempt["error"]["status_code"] == 503
            assert "our_price" not in attempt
        if row["status"] == "succeeded":
            assert attempts[-1]["outcome"] == "succeeded"
        else:
            assert row["charged"] == "0.000000"
    # The per-item rows say how many attempts each item took.
    rows = get_json(client, secret, f"/v1/batches/{batch['id']}/results?limit=100")["data"]
    assert {r["customer_item_id"]: r["attempts"] for r in rows} == \
        {r["customer_item_id"]: len(r["attempts"]) for r in receipt}
    # Failed attempts cost nothing: the batch pays one success per item.
    charged = sum(money.parse(r["charged"]) for r in receipt)
    assert money.parse(body["cost_usd"]["settled"]) == charged
    after = balances(db, ws)
    assert after.spent == charged and after.reserved == 0
    assert after.available == before.available + before.reserved - charged


def test_an_item_failing_permanently_on_every_lane_ends_failed(app, client, db, owner,
                                                               seeded_catalog, worker,
                                                               monkeypatch):
    _ws, secret = owner
    real_answer = SandboxProvider.answer

    def answer(self, model, request):
        if request.customer_item_id == "item-3":
            return ItemResult(request.item_id, False, provider_request_id="req_bad",
                              error=error("invalid_request", "Input rejected by the provider.",
                                          retryable=False, provider="sandbox", status_code=400))
        return real_answer(self, model, request)

    monkeypatch.setattr(SandboxProvider, "answer", answer)
    _q, batch = quote_and_create(client, secret, chat_items(6))
    drive(db, worker, batch["id"])

    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert body["status"] == "completed"  # at least one item succeeded
    assert body["counts"]["succeeded"] == 5 and body["counts"]["failed"] == 1
    assert_counts_match_items(db, batch["id"])
    _results, errors = artifacts(client, secret, batch["id"])
    [line] = errors
    assert set(line) == ERROR_LINE_KEYS
    assert line["customer_item_id"] == "item-3" and line["status"] == "failed"
    assert {"code", "message", "retryable"} <= set(line["error"])
    assert line["error"]["code"] == "invalid_request" and line["error"]["retryable"] is False
    # A permanent error is not retried on the same lane: one attempt per lane of the ladder.
    assert line["attempts"] == 2
    [row] = [r for r in receipt_items(client, secret, batch["id"])
             if r["customer_item_id"] == "item-3"]
    assert [a["lane"] for a in row["attempts"]] == [BATCH_LANE, SYNC_LANE]
    assert row["status"] == "failed" and row["charged"] == "0.000000"
    failed = get_json(client, secret, f"/v1/batches/{batch['id']}/results?status=failed")["data"]
    assert [(r["customer_item_id"], r["attempts"], r["error"]["code"]) for r in failed] == \
        [("item-3", 2, "invalid_request")]


@pytest.mark.parametrize("app_overrides", [DOWN], indirect=True)
def test_a_batch_whose_items_all_fail_is_failed_and_costs_nothing(app, client, db, owner,
                                                                  seeded_catalog, worker):
    ws, secret = owner
    _q, batch = quote_and_create(client, secret, chat_items(4))
    before = balances(db, ws)
    drive(db, worker, batch["id"])

    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert body["status"] == "failed", body
    assert body["counts"]["failed"] == 4
    assert body["error_summary"] == {"top_causes": [{"code": "provider_unavailable", "items": 4}]}
    _results, errors = artifacts(client, secret, batch["id"])
    for line in errors:
        assert line["status"] == "failed" and line["error"]["retryable"] is True
        # Three tries on the batch lane, then the sync lane (the last of the ladder) until
        # the cap of 8 attempts per item.
        assert line["attempts"] == 8
    assert balances(db, ws) == ledger.Balances(before.available + before.reserved, 0, 0)
    assert read(db, ledger.verify_balances) == []


def test_fallback_lane_is_charged_at_the_quoted_lanes_locked_rates(app, client, db, owner,
                                                                   seeded_catalog, worker,
                                                                   monkeypatch):
    ws, secret = owner

    def failing_poll(self, handle):  # every provider batch on the native lane fails
        return Poll("failed")

    monkeypatch.setattr(SandboxProvider, "poll", failing_poll)
    items = chat_items(5, max_output_tokens=64)
    q, batch = quote_and_create(client, secret, items)
    [quoted] = q["quote_lanes"]["selected"]
    assert quoted["lane"] == BATCH_LANE
    sync = next(lane for lane in q["quote_lanes"]["rejected"] if lane["lane"] == SYNC_LANE)
    assert sync["code"] == "higher_cost"
    # The operator raises the catalog prices after the quote: the batch keeps the lock.
    with db.session() as s:
        s.execute(update(Offering).where(Offering.provider_slug == "sandbox")
                  .values(input_micros_per_mtok=Offering.input_micros_per_mtok * 10,
                          output_micros_per_mtok=Offering.output_micros_per_mtok * 10))
    drive(db, worker, batch["id"])

    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert body["status"] == "completed" and body["counts"]["succeeded"] == 5
    rate_in = money.parse(quoted["input_per_mtok"])
    rate_out = money.parse(quoted["output_per_mtok"])
    discount = money.parse(quoted["batch_discount"])
    fee_ppm = money.parse(q["pricing_estimate"]["fee_rate"])
    total = 0
    for row in receipt_items(client, secret, batch["id"]):
        assert row["quoted_lane"] == BATCH_LANE and row["final_lane"] == SYNC_LANE
        lanes = [a["lane"] for a in row["attempts"]]
        # A failed provider batch degrades the lane: its items move down at once.
        assert lanes == [BATCH_LANE, SYNC_LANE], lanes
        assert row["attempts"][0]["error"]["code"] == "provider_batch_failed"
        usage = row["usage"]
        sub, fee = pricing.price(usage["input_tokens"], usage["output_tokens"], rate_in,
                                 rate_out, discount, fee_ppm)
        charged = money.parse(row["charged"])
        assert charged == min(sub + fee, money.parse(row["quoted"]["high"]))
        assert charged <= money.parse(row["quoted"]["high"])
        # What the sync lane would cost is on the attempt, and the difference we absorb
        # shows as platform cost.
        assert money.parse(row["attempts"][-1]["our_price"]) > charged
        assert money.parse(row["platform_cost"]) == money.parse(row["provider_cost"]) - sub > 0
        total += charged
    assert money.parse(body["cost_usd"]["settled"]) == total
    billing = get_json(client, secret, f"/v1/batches/{batch['id']}/billing-receipt")
    assert {r["lane"] for r in billing["lanes_ran"]} == {BATCH_LANE, SYNC_LANE}
    assert balances(db, ws).spent == total


def test_running_a_finished_unit_again_charges_nothing_more(app, client, db, owner,
                                                           seeded_catalog, worker):
    ws, secret = owner
    _q, batch = quote_and_create(client, secret, chat_items(12))
    units = units_of(db, batch["id"])
    # The queue delivers every unit's job three times (at-least-once delivery).
    rt = app.extensions["batchrouter"]
    from batchrouter import queue
    for unit in units:
        for _ in range(2):
            queue.enqueue(rt.redis, "jobs.dispatch.run_work_unit", unit.id)
    drive(db, worker, batch["id"])

    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert body["status"] == "completed" and body["counts"]["succeeded"] == 12
    assert all(len(i.attempt_log) == 1 for i in items_of(db, batch["id"]))
    settled = money.parse(body["cost_usd"]["settled"])
    assert settle_count(db, ws) == len(units)
    state = (balances(db, ws), [(i.status, i.charged_micros, len(i.attempt_log))
                                for i in items_of(db, batch["id"])])

    runtime.install(app)
    for unit in units:
        for _ in range(2):
            assert dispatch_jobs.run_work_unit(unit.id) == "not-claimed"
            dispatch_jobs.poll_work_unit(unit.id)
        assert dispatch_jobs.finalize_batch(batch["id"]) is None

    again = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert money.parse(again["cost_usd"]["settled"]) == settled
    assert again["counts"] == body["counts"]
    assert settle_count(db, ws) == len(units)
    assert (balances(db, ws), [(i.status, i.charged_micros, len(i.attempt_log))
                               for i in items_of(db, batch["id"])]) == state
    assert read(db, ledger.verify_balances) == []
    assert client.get(f"/v1/batches/{batch['id']}/billing-receipt",
                      headers=bearer(secret)).get_json()["settled"] == money.to_wire(settled)


def test_usage_above_the_quoted_high_is_charged_at_most_high(app, client, db, owner,
                                                             seeded_catalog, worker,
                                                             monkeypatch):
    """A provider that reports far more usage than the quote's worst case: the customer pays
    the item's high, the difference is recorded as platform cost (SPEC §4, checklist B4 #5)."""
    ws, secret = owner
    real_answer = SandboxProvider.answer

    def answer(self, model, request):
        result = real_answer(self, model, request)
        if request.customer_item_id == "item-1":
            result.usage = {"input_tokens": 2_000_000, "output_tokens": 50_000}
        return result

    monkeypatch.setattr(SandboxProvider, "answer", answer)
    items = chat_items(3, max_output_tokens=1000)
    q, batch = quote_and_create(client, secret, items)
    drive(db, worker, batch["id"])

    rows = {r["customer_item_id"]: r for r in receipt_items(client, secret, batch["id"])}
    big = rows["item-1"]
    high = money.parse(big["quoted"]["high"])
    assert money.parse(big["charged"]) == high
    assert money.parse(big["attempts"][-1]["our_price"]) > high
    assert money.parse(big["platform_cost"]) > 0
    for other in ("item-0", "item-2"):
        assert money.parse(rows[other]["charged"]) < money.parse(rows[other]["quoted"]["high"])
    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    settled = money.parse(body["cost_usd"]["settled"])
    assert settled == sum(money.parse(r["charged"]) for r in rows.values())
    assert settled <= money.parse(q["pricing_estimate"]["high"])
    assert balances(db, ws).spent == settled and balances(db, ws).reserved == 0
    assert read(db, ledger.verify_balances) == []
