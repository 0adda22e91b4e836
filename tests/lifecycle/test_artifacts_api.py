"""The batch API rows of SPEC §6, signed downloads, receipts, feedback and the create guards
(Idempotency-Key, quote_used / quote_expired / quote_mismatch, insufficient_credits, test mode)."""
from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from batchrouter import ledger, money, pricing, tokens
from batchrouter.artifacts import PURPOSE
from batchrouter.db import utcnow
from batchrouter.models import Batch, LedgerTransaction, Offering, Quote, Reservation
from batchrouter.providers.base import ItemResult, error
from batchrouter.providers.sandbox import SandboxProvider
from tests.factories import SETTINGS, bearer, make_key, make_user, read, workspace_of
from tests.lifecycle.helpers import chat_items, create, quote, quote_and_create
from tests.lifecycle.support import (
    BATCH_LANE,
    RESULT_LINE_KEYS,
    SYNC_LANE,
    artifacts,
    balances,
    get_json,
    local,
)


@pytest.fixture
def app_overrides(tmp_path, request):
    return {"BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage"),
            "BATCHROUTER_SANDBOX_BATCH_DELAY": 0.0, "BATCHROUTER_POLL_INTERVAL": 0.0,
            **getattr(request, "param", {})}


def tenant(session, email):
    user = make_user(session, email)
    _key, secret = make_key(session, user)
    return workspace_of(session, user), secret


@pytest.fixture
def owner(session):
    return tenant(session, "owner@example.com")


@pytest.fixture
def stranger(session):
    return tenant(session, "stranger@example.com")


def finished_batch(client, secret, worker, n=8, **controls):
    items = chat_items(n, **controls)
    q, batch = quote_and_create(client, secret, items)
    worker()
    return q, get_json(client, secret, f"/v1/batches/{batch['id']}"), items


def fail_items(monkeypatch, *customer_ids):
    """These items fail permanently on every lane (a 400 from the provider)."""
    real_answer = SandboxProvider.answer

    def answer(self, model, request):
        if request.customer_item_id in customer_ids:
            return ItemResult(request.item_id, False, provider_request_id="req_400",
                              error=error("invalid_request", "Rejected by the provider.",
                                          retryable=False, provider="sandbox", status_code=400))
        return real_answer(self, model, request)

    monkeypatch.setattr(SandboxProvider, "answer", answer)


def ledger_rows(db) -> int:
    return read(db, lambda s: s.scalar(select(func.count()).select_from(LedgerTransaction)))


# --- list / get ------------------------------------------------------------------------------

@pytest.mark.pg
def test_list_pages_with_a_cursor_and_filters_by_status(app, client, db, owner, stranger,
                                                        seeded_catalog, worker):
    _ws, secret = owner
    created = [quote_and_create(client, secret, chat_items(2))[1]["id"] for _ in range(5)]
    worker()
    _q, last = quote_and_create(client, secret, chat_items(2))
    assert client.post(f"/v1/batches/{last['id']}/cancel",
                       headers=bearer(secret)).status_code == 200
    worker()
    created.append(last["id"])

    seen, after, pages = [], None, 0
    while True:
        query = "/v1/batches?limit=2" + (f"&after={after}" if after else "")
        page = get_json(client, secret, query)
        pages += 1
        assert page["object"] == "list" and len(page["data"]) <= 2
        seen += [b["id"] for b in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
        assert after == page["data"][-1]["id"]
    assert pages == 3
    assert seen == list(reversed(created)), "newest first, each batch exactly once"

    completed = get_json(client, secret, "/v1/batches?status=completed&limit=100")["data"]
    assert sorted(b["id"] for b in completed) == sorted(created[:5])
    assert all(b["status"] == "completed" for b in completed)
    cancelled = get_json(client, secret, "/v1/batches?status=cancelled")["data"]
    assert [b["id"] for b in cancelled] == [last["id"]]
    assert get_json(client, secret, "/v1/batches?status=failed")["data"] == []
    _other_ws, other = stranger
    assert get_json(client, other, "/v1/batches")["data"] == []
    assert client.get("/v1/batches?limit=0", headers=bearer(secret)).status_code == 400


@pytest.mark.pg
def test_get_with_billing_receipt_and_the_receipt_fields(app, client, db, owner,
                                                         seeded_catalog, worker):
    _ws, secret = owner
    q, body, items = finished_batch(client, secret, worker, n=8)
    assert body["status"] == "completed" and "billing_receipt" not in body
    with_receipt = get_json(client, secret,
                            f"/v1/batches/{body['id']}?include_billing_receipt=true")
    receipt = get_json(client, secret, f"/v1/batches/{body['id']}/billing-receipt")
    assert with_receipt["billing_receipt"] == receipt
    assert receipt["object"] == "billing_receipt" and receipt["batch_id"] == body["id"]
    assert receipt["mode"] == "live" and receipt["status"] == "completed"

    estimate = q["pricing_estimate"]
    assert receipt["quoted"] == {"low": estimate["low"], "expected": estimate["expected"],
                                 "high": estimate["high"]}
    settled, high = money.parse(receipt["settled"]), money.parse(estimate["high"])
    assert receipt["reserved"] == estimate["high"]
    assert receipt["settled"] == body["cost_usd"]["settled"] and 0 < settled <= high
    assert money.parse(receipt["released"]) == high - settled
    subtotal, fee = money.parse(receipt["provider_subtotal"]), money.parse(receipt["fee"])
    assert subtotal + fee == settled
    assert receipt["fee_rate"] == estimate["fee_rate"] == "0.059000"
    assert abs(fee - subtotal * 59_000 // 1_000_000) <= len(items)  # per-item rounding
    assert receipt["lanes_ran"] == [{"lane": BATCH_LANE, "items": 8}]
    rejected = {(r["lane"], r["code"]): r for r in receipt["lanes_rejected"]}
    assert rejected[(SYNC_LANE, "higher_cost")]["items"] == 8
    assert all(r["reason"] for r in receipt["lanes_rejected"])

    # Optimization: the same usage at the first-party synchronous list price, plus the fee.
    sync = read(db, lambda s: s.scalars(select(Offering).where(
        Offering.model_slug == "sandbox-chat", Offering.mode == "sync")).one())
    usage = [r["usage"] for r in get_json(client, secret,
                                          f"/v1/batches/{body['id']}/receipt")["items"]]
    baseline = sum(sum(pricing.price(u["input_tokens"], u["output_tokens"],
                                     sync.input_micros_per_mtok, sync.output_micros_per_mtok,
                                     0, 59_000)) for u in usage)
    opt = receipt["optimization"]
    assert money.parse(opt["baseline_cost"]) == baseline
    assert opt["charged"] == receipt["settled"]
    assert money.parse(opt["saving"]) == baseline - settled > 0
    assert opt["saving_percent"] == round((baseline - settled) * 100 / baseline, 1)
    assert opt["saving_percent"] >= 40  # the sandbox batch lane is half price (before rounding)


# --- results -------------------------------------------------------------------------------

@pytest.mark.pg
def test_results_page_with_a_cursor_and_filter_by_status(app, client, db, owner,
                                                         seeded_catalog, worker, monkeypatch):
    _ws, secret = owner
    fail_items(monkeypatch, "item-3", "item-7")
    _q, body, items = finished_batch(client, secret, worker, n=12)
    # The fallback unit of the failing items starts after a short delay.
    deadline = time.monotonic() + 15
    while get_json(client, secret, f"/v1/batches/{body['id']}")["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.3)
        worker()
    base = f"/v1/batches/{body['id']}/results"

    rows, cursor, pages = [], None, 0
    while True:
        page = get_json(client, secret, f"{base}?limit=5" + (f"&cursor={cursor}" if cursor
                                                              else ""))
        rows += page["data"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [r["customer_item_id"] for r in rows] == [i["customer_item_id"] for i in items]
    for row in rows:
        if row["customer_item_id"] in ("item-3", "item-7"):
            assert row["status"] == "failed" and row["result"] is None
            assert row["error"]["code"] == "invalid_request" and row["attempts"] == 2
        else:
            assert row["status"] == "succeeded" and row["error"] is None
            assert set(row["result"]) == RESULT_LINE_KEYS
            assert row["result"]["customer_item_id"] == row["customer_item_id"]

    failed = get_json(client, secret, f"{base}?status=failed")["data"]
    assert [r["customer_item_id"] for r in failed] == ["item-3", "item-7"]
    ok, cursor = [], None
    while True:
        page = get_json(client, secret, f"{base}?status=succeeded&limit=4"
                        + (f"&cursor={cursor}" if cursor else ""))
        ok += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(ok) == 10 and all(r["status"] == "succeeded" for r in ok)
    assert len({r["customer_item_id"] for r in ok}) == 10
    assert client.get(f"{base}?cursor=abc", headers=bearer(secret)).get_json()["error"][
        "code"] == "invalid_cursor"


# --- artifacts and signed downloads ----------------------------------------------------------

@pytest.mark.pg
def test_artifact_urls_are_signed_and_download(app, client, db, owner, seeded_catalog,
                                               worker):
    _ws, secret = owner
    items = chat_items(6)
    _q, batch = quote_and_create(client, secret, items)
    response = client.get(f"/v1/batches/{batch['id']}/artifact-url", headers=bearer(secret))
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "artifacts_not_ready"
    worker()

    urls = get_json(client, secret, f"/v1/batches/{batch['id']}/artifact-url")
    assert urls["object"] == "artifact_urls" and urls["batch_id"] == batch["id"]
    assert urls["expires_at"] == urls["results"]["expires_at"]
    for name in ("results", "errors"):
        link = urls[name]
        assert link["url"].startswith("http://127.0.0.1:5000/v1/files/download/")
        download = client.get(local(link["url"]))  # no API key: the link is the grant
        assert download.status_code == 200
        assert download.mimetype == "application/jsonl"
        assert download.headers["Content-Disposition"].startswith("attachment;")
        assert len(download.data) == link["bytes"]
        assert hashlib.sha256(download.data).hexdigest() == link["sha256"]
    results, errors = artifacts(client, secret, batch["id"])
    assert [r["customer_item_id"] for r in results] == [i["customer_item_id"] for i in items]
    assert errors == []

    token = urls["results"]["url"].rsplit("/", 1)[1]
    middle = len(token) // 2
    for forged in (token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
                   token[:middle] + ("x" if token[middle] != "x" else "y") + token[middle + 1:],
                   "not-a-token"):
        response = client.get(f"/v1/files/download/{forged}")
        assert response.status_code == 403, forged
        assert response.get_json()["error"]["code"] == "invalid_download_link"


@pytest.mark.pg
@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_ARTIFACT_URL_TTL": 1}], indirect=True)
def test_an_expired_download_link_is_refused(app, client, owner, seeded_catalog, worker):
    _ws, secret = owner
    _q, body, _items = finished_batch(client, secret, worker, n=2)
    url = get_json(client, secret, f"/v1/batches/{body['id']}/artifact-url")["results"]["url"]
    time.sleep(2.2)
    response = client.get(local(url))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "invalid_download_link"


@pytest.mark.pg
def test_a_link_for_one_workspace_cannot_fetch_anothers_file(app, client, owner, stranger,
                                                             seeded_catalog, worker):
    ws_a, secret_a = owner
    ws_b, secret_b = stranger
    finished_batch(client, secret_a, worker, n=2)
    _q, batch_b, _items = finished_batch(client, secret_b, worker, n=2)
    file_b = batch_b["results_file_id"]
    secret_key = app.config["SECRET_KEY"]

    genuine = tokens.sign(secret_key, PURPOSE, {"f": file_b, "w": ws_b})
    assert client.get(f"/v1/files/download/{genuine}").status_code == 200
    forged = tokens.sign(secret_key, PURPOSE, {"f": file_b, "w": ws_a})
    response = client.get(f"/v1/files/download/{forged}")
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "invalid_download_link"
    # A token of another purpose (e.g. an emailed link) is not a download grant either.
    other_purpose = tokens.sign(secret_key, "email-verify", {"f": file_b, "w": ws_b})
    assert client.get(f"/v1/files/download/{other_purpose}").status_code == 403


@pytest.mark.pg
def test_another_tenants_batch_is_404_on_every_row(app, client, db, owner, stranger,
                                                   seeded_catalog, worker):
    _ws, secret = owner
    _q, body, _items = finished_batch(client, secret, worker, n=2)
    _other_ws, other = stranger
    bid = body["id"]
    calls = [("get", f"/v1/batches/{bid}"),
             ("get", f"/v1/batches/{bid}?include_billing_receipt=true"),
             ("post", f"/v1/batches/{bid}/cancel"),
             ("get", f"/v1/batches/{bid}/results"),
             ("get", f"/v1/batches/{bid}/artifact-url"),
             ("get", f"/v1/batches/{bid}/receipt"),
             ("get", f"/v1/batches/{bid}/billing-receipt"),
             ("post", f"/v1/batches/{bid}/items/item-0/feedback")]
    for method, path in calls:
        kwargs = {"json": {"score": 5}} if path.endswith("feedback") else {}
        response = getattr(client, method)(path, headers=bearer(other), **kwargs)
        assert response.status_code == 404, (method, path, response.get_json())
        assert response.get_json()["error"]["code"] == "batch_not_found", path
    # Unknown ids are 404 too, and the owner's batch is untouched.
    assert client.get("/v1/batches/bat_nope", headers=bearer(secret)).status_code == 404
    assert get_json(client, secret, f"/v1/batches/{bid}")["status"] == "completed"
    assert read(db, lambda s: s.get(Batch, bid).cancel_requested_at) is None


# --- receipts and feedback -------------------------------------------------------------------

@pytest.mark.pg
def test_route_receipt_pages_through_every_item(app, client, owner, seeded_catalog, worker):
    _ws, secret = owner
    _q, body, items = finished_batch(client, secret, worker, n=25)
    rows, cursor, pages = [], None, 0
    while True:
        page = get_json(client, secret, f"/v1/batches/{body['id']}/receipt?limit=10"
                        + (f"&cursor={cursor}" if cursor else ""))
        assert page["object"] == "route_receipt" and page["batch_id"] == body["id"]
        rows += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [r["customer_item_id"] for r in rows] == [i["customer_item_id"] for i in items]
    for row in rows:
        assert row["status"] == "succeeded"
        assert row["quoted_lane"] == row["final_lane"] == BATCH_LANE
        [attempt] = row["attempts"]
        assert attempt["lane"] == BATCH_LANE and attempt["outcome"] == "succeeded"
        assert attempt["provider_request_id"].startswith("sandbox_req_")
        assert attempt["usage"] == row["usage"] and row["usage"]["output_tokens"] > 0
        assert attempt["our_price"] == row["charged"]
        assert money.parse(row["charged"]) <= money.parse(row["quoted"]["high"])
        assert row["platform_cost"] == "0.000000"
    assert sum(money.parse(r["charged"]) for r in rows) == money.parse(body["cost_usd"]["settled"])


@pytest.mark.pg
def test_item_feedback(app, client, owner, seeded_catalog, worker):
    _ws, secret = owner
    _q, body, _items = finished_batch(client, secret, worker, n=2)
    base = f"/v1/batches/{body['id']}/items"
    response = client.post(f"{base}/item-1/feedback", headers=bearer(secret),
                           json={"score": 4, "label": "good", "note": "close enough"})
    assert response.status_code == 201, response.get_json()
    data = response.get_json()
    assert data["object"] == "feedback" and data["score"] == 4 and data["label"] == "good"
    assert data["provider"] == "sandbox" and data["model"] == "sandbox-chat"
    for score in (0, 6, "5", 4.5, None):
        response = client.post(f"{base}/item-1/feedback", headers=bearer(secret),
                               json={"score": score})
        assert response.status_code == 422, score
        assert response.get_json()["error"]["code"] == "invalid_score"
    response = client.post(f"{base}/no-such-item/feedback", headers=bearer(secret),
                           json={"score": 3})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "item_not_found"


# --- create guards ---------------------------------------------------------------------------

@pytest.mark.pg
def test_idempotency_key_replays_the_create_without_a_second_hold(app, client, db, owner,
                                                                  seeded_catalog):
    ws, secret = owner
    items = chat_items(3)
    q = quote(client, secret, items)
    headers = {**bearer(secret), "Idempotency-Key": "create-once"}
    payload = {"quote_id": q["id"], "items": items}
    first = client.post("/v1/batches", json=payload, headers=headers)
    assert first.status_code == 201
    again = client.post("/v1/batches", json=payload, headers=headers)
    assert again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    conflict = client.post("/v1/batches", json={**payload, "metadata": {"a": "b"}},
                           headers=headers)
    assert conflict.status_code == 409
    assert conflict.get_json()["error"]["code"] == "idempotency_conflict"

    high = money.parse(q["pricing_estimate"]["high"])
    assert balances(db, ws).reserved == high
    assert read(db, lambda s: s.scalar(select(func.count()).select_from(Reservation))) == 1
    assert read(db, lambda s: s.scalar(select(func.count()).select_from(Batch))) == 1


@pytest.mark.pg
def test_a_used_an_expired_or_a_different_manifest_quote_is_refused(app, client, db, owner,
                                                                    seeded_catalog):
    ws, secret = owner
    items = chat_items(3)
    used, _batch = quote_and_create(client, secret, items)
    held = balances(db, ws)
    response = create(client, secret, items, used["id"])
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "quote_used"

    stale = quote(client, secret, items)
    with db.session() as s:
        s.execute(update(Quote).where(Quote.id == stale["id"])
                  .values(expires_at=utcnow() - timedelta(seconds=1)))
    response = create(client, secret, items, stale["id"])
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "quote_expired"

    fresh = quote(client, secret, items)
    edited = [dict(items[0], input={"messages": [{"role": "user", "content": "Changed?"}]}),
              *items[1:]]
    for manifest in (edited, items[:2], items + chat_items(1, prefix="extra")):
        response = create(client, secret, manifest, fresh["id"])
        assert response.status_code == 409, response.get_json()
        assert response.get_json()["error"]["code"] == "quote_mismatch"
    assert balances(db, ws) == held, "a refused create holds nothing"
    assert create(client, secret, items, fresh["id"]).status_code == 201


@pytest.mark.pg
def test_a_short_balance_is_402_with_the_shortfall(app, client, db, session, seeded_catalog):
    user = make_user(session, settings=replace(SETTINGS, starter_credits=1_000))
    ws = workspace_of(session, user)
    _key, secret = make_key(session, user)
    items = chat_items(5)
    q = quote(client, secret, items)
    high = money.parse(q["pricing_estimate"]["high"])
    assert q["balance"]["covers_high"] is False
    assert q["balance"]["shortfall"] == money.to_wire(high - 1_000)

    response = create(client, secret, items, q["id"])
    assert response.status_code == 402
    err = response.get_json()["error"]
    assert err["code"] == "insufficient_credits"
    assert err["details"] == {"required": money.to_wire(high), "available": "0.001000",
                              "shortfall": money.to_wire(high - 1_000)}
    assert balances(db, ws) == ledger.Balances(1_000, 0, 0)
    # After a top-up the same quote still works: nothing was consumed by the refusal.
    with db.sessionmaker() as s:
        ledger.grant(s, ws, high, kind="purchase", reason="top-up", idempotency_key="cs_top")
        s.commit()
    assert create(client, secret, items, q["id"]).status_code == 201
    assert balances(db, ws).reserved == high


@pytest.mark.pg
def test_a_test_mode_key_runs_a_batch_that_touches_no_ledger(app, client, db, session,
                                                             seeded_catalog, worker):
    user = make_user(session)
    ws = workspace_of(session, user)
    _key, secret = make_key(session, user, mode="test")
    _live_key, live = make_key(session, user)
    before, rows = balances(db, ws), ledger_rows(db)

    items = chat_items(4)
    q = quote(client, secret, items)
    assert q["mode"] == "test" and q["balance"]["reserve_on_create"] == "0.000000"
    assert money.parse(q["pricing_estimate"]["high"]) > 0  # prices are shown
    wrong = create(client, live, items, q["id"])  # a live key cannot use a test quote
    assert wrong.status_code == 400 and wrong.get_json()["error"]["code"] == "mode_mismatch"
    response = create(client, secret, items, q["id"])
    assert response.status_code == 201
    batch = response.get_json()
    assert batch["mode"] == "test" and batch["cost_usd"]["reserved"] == "0.000000"
    assert balances(db, ws) == before
    worker()

    body = get_json(client, secret, f"/v1/batches/{batch['id']}?include_billing_receipt=true")
    assert body["status"] == "completed" and body["mode"] == "test"
    assert body["billing_receipt"]["mode"] == "test"
    assert body["billing_receipt"]["reserved"] == "0.000000"
    results, _errors = artifacts(client, secret, batch["id"])
    assert [r["provider"] for r in results] == ["sandbox"] * 4
    assert balances(db, ws) == before
    assert ledger_rows(db) == rows, "a test batch writes no ledger transaction"
    assert read(db, lambda s: s.scalar(select(func.count()).select_from(Reservation))) == 0
