"""Real provider lanes end to end (issue 6): a batch quoted and created through the API runs on
OpenAI, Anthropic and OpenRouter loopback fakes through the official SDKs, with retries,
fallback at the quoted price, stall detection, partial expiry and idempotent submission."""
from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select, update

from batchrouter import ledger, money, pricing
from batchrouter.models import Item, LedgerTransaction, Offering, WorkUnit
from batchrouter.outcomes import ingest
from batchrouter.providers import Connection, connect
from batchrouter.providers.base import ItemResult, build_request
from tests.factories import read
from tests.lifecycle.helpers import quote_and_create
from tests.lifecycle.support import (
    artifacts,
    assert_counts_match_items,
    balances,
    drive,
    get_json,
    items_of,
    units_of,
)
from tests.providers.conftest import chat
from tests.providers.fakes import RESET

pytestmark = pytest.mark.pg


def receipt(client, secret, batch_id) -> dict:
    rows = get_json(client, secret, f"/v1/batches/{batch_id}/receipt?limit=1000")["items"]
    return {r["customer_item_id"]: r for r in rows}


def settles(db, ws) -> int:
    return read(db, lambda s: s.scalar(select(func.count()).select_from(LedgerTransaction)
                                       .where(LedgerTransaction.workspace_id == ws,
                                              LedgerTransaction.kind == "settle")))


def assert_settled_once(db, ws, batch_id):
    """Every unit settled exactly once; the ledger still balances; nothing left held."""
    units = units_of(db, batch_id)
    assert all(u.settled for u in units)
    assert settles(db, ws) == len(units)
    assert read(db, ledger.verify_balances) == []
    assert balances(db, ws).reserved == 0


def test_a_batch_spanning_three_providers_completes_on_the_right_lanes(
        app, client, db, owner, worker, fakes):
    ws, secret = owner
    items = [chat("oa-1", "gpt-4o-mini"), chat("oa-2", "gpt-4o-mini", "Second"),
             chat("an-1", "claude-haiku-4-5"), chat("an-2", "claude-haiku-4-5", "Other"),
             chat("or-1", "llama-3.1-8b-instruct"),
             {"customer_item_id": "emb-1", "operation": "embeddings",
              "model": "text-embedding-3-small", "input": {"input": "embed me " * 2000}}]
    _q, batch = quote_and_create(client, secret, items)
    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    drive(db, worker, batch["id"])

    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert body["status"] == "completed" and body["counts"]["succeeded"] == 6, body
    rows = receipt(client, secret, batch["id"])
    assert {k: r["final_lane"] for k, r in rows.items()} == {
        "oa-1": "openai/gpt-4o-mini/batch", "oa-2": "openai/gpt-4o-mini/batch",
        "an-1": "anthropic/claude-haiku-4-5/batch", "an-2": "anthropic/claude-haiku-4-5/batch",
        "or-1": "openrouter/llama-3.1-8b-instruct/sync",
        "emb-1": "openai/text-embedding-3-small/batch"}
    results, errors = artifacts(client, secret, batch["id"])
    assert errors == []
    by_id = {r["customer_item_id"]: r for r in results}
    assert by_id["oa-1"]["output"]["text"] == "answer to Be brief. Hello there"
    assert by_id["an-2"]["output"] == {"text": "claude says: Other", "finish_reason": "stop"}
    assert by_id["an-2"]["response"]["type"] == "message"  # Anthropic's native body
    assert by_id["emb-1"]["output"]["embedding"] == [0.1, 0.2, 0.3]
    # The batch discount applies on batch lanes: usage × locked rate × 50 % + fee.
    oa = rows["oa-1"]
    sub, fee = pricing.price(oa["usage"]["input_tokens"], oa["usage"]["output_tokens"],
                             money.parse("0.15"), money.parse("0.60"), 500_000, 59_000)
    assert money.parse(oa["charged"]) == sub + fee
    # OpenRouter: the reported usage.cost and the upstream that served it are on the receipt.
    [attempt] = rows["or-1"]["attempts"]
    assert attempt["provider_cost"] == "0.000123" and attempt["served_by"] == "Groq"
    assert rows["or-1"]["provider_cost"] == "0.000123"

    # On the wire: one JSONL file per provider batch with purpose=batch, one model each.
    openai_fake = fakes["openai"]
    assert {b["endpoint"] for b in openai_fake.batches.values()} == \
        {"/v1/chat/completions", "/v1/embeddings"}
    for b in openai_fake.batches.values():
        assert len({line["body"]["model"] for line in b["_lines"]}) == 1
        assert b["metadata"]["batchrouter_unit"].startswith("wu_")
    uploads = openai_fake.stub.received("POST", "/v1/files")
    assert all(b'name="purpose"\r\n\r\nbatch' in u.body for u in uploads)
    [anthropic_batch] = fakes["anthropic"].batches.values()
    params = anthropic_batch["_requests"][0]["params"]
    assert params["system"] == "Be brief." and params["max_tokens"] == 50
    assert params["messages"] == [{"role": "user", "content": "Hello there"}]
    sent = fakes["anthropic"].stub.requests[0].headers
    assert "sk-ant-test" in (sent.get("x-api-key"), sent.get("authorization", "")[7:])
    assert sent["anthropic-version"]
    assert_counts_match_items(db, batch["id"])
    assert_settled_once(db, ws, batch["id"])


# The default thin `wire` client and the SDK's own aiohttp transport, against the same fakes.
@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_SYNC_TRANSPORT": "wire"},
                                           {"BATCHROUTER_SYNC_TRANSPORT": "aiohttp"}],
                         indirect=True, ids=["wire", "sdk-aiohttp"])
def test_sync_lane_survives_429_503_resets_timeouts_and_truncated_bodies(
        app, client, db, owner, worker, fakes):
    ws, secret = owner
    fake = fakes["openai"]

    def too_slow():
        time.sleep(2.5)  # past BATCHROUTER_PROVIDER_TIMEOUT (2 s)
        return 200, fake.chat_body({"model": "gpt-4o-mini", "messages": []})

    fake.fail_next = [(429, {"error": {"message": "Rate limit", "type": "requests"}},
                       {"retry-after-ms": "20"}),
                      (503, {"error": {"message": "Overloaded", "type": "server_error"}}),
                      RESET, (200, b'{"id": "chatcmpl-1", "choices": [{"ind'), too_slow]
    items = [chat(f"s-{i}", "gpt-4o-mini", f"Q{i}") for i in range(8)]
    _q, batch = quote_and_create(client, secret, items, sla_tier="priority")
    drive(db, worker, batch["id"], timeout=60)

    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert body["status"] == "completed" and body["counts"]["succeeded"] == 8, body
    rows = receipt(client, secret, batch["id"])
    assert {r["final_lane"] for r in rows.values()} == {"openai/gpt-4o-mini/sync"}
    codes = sorted(a["error"]["code"] for r in rows.values() for a in r["attempts"]
                   if a["outcome"] == "failed")
    # A dropped connection reads as a connection error or, on the aiohttp transport, a
    # timeout: transient either way.
    assert len(codes) == 5 and set(codes) >= {"rate_limited", "provider_unavailable",
                                              "malformed_response", "provider_timeout"}
    assert set(codes) <= {"rate_limited", "provider_unavailable", "malformed_response",
                          "provider_timeout", "provider_connection_error"}
    limited = [a for r in rows.values() for a in r["attempts"]
               if a.get("error", {}).get("code") == "rate_limited"]
    assert limited[0]["error"]["retry_after"] == 0.02 and limited[0]["error"]["retryable"]
    # Each item billed once: failed attempts cost nothing.
    assert sum(money.parse(r["charged"]) for r in rows.values()) == \
        money.parse(body["cost_usd"]["settled"])
    assert all(len([a for a in r["attempts"] if a["outcome"] == "succeeded"]) == 1
               for r in rows.values())
    assert_settled_once(db, ws, batch["id"])


def test_a_permanent_error_is_not_retried_and_falls_back_at_the_quoted_price(
        app, client, db, owner, worker, fakes):
    ws, secret = owner
    fakes["openai"].fail_next = [(400, {"error": {
        "message": "This model's maximum context length is 128000 tokens",
        "type": "invalid_request_error", "code": "context_length_exceeded"}})]
    _q, batch = quote_and_create(client, secret, [chat("p-1", "gpt-4o-mini")],
                                 sla_tier="priority")
    drive(db, worker, batch["id"])

    row = receipt(client, secret, batch["id"])["p-1"]
    assert [(a["lane"], a["outcome"]) for a in row["attempts"]] == [
        ("openai/gpt-4o-mini/sync", "failed"), ("openrouter/gpt-4o-mini/sync", "succeeded")]
    assert row["attempts"][0]["error"]["code"] == "context_too_long"
    assert row["attempts"][0]["error"]["retryable"] is False
    assert row["quoted_lane"] == "openai/gpt-4o-mini/sync"
    usage = row["usage"]
    sub, fee = pricing.price(usage["input_tokens"], usage["output_tokens"],
                             money.parse("0.15"), money.parse("0.60"), 0, 59_000)
    assert money.parse(row["charged"]) == sub + fee  # the quoted lane's locked rates
    assert_settled_once(db, ws, batch["id"])


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_STALL_WINDOW": 0.3}], indirect=True)
def test_a_stuck_provider_batch_stalls_and_its_items_finish_on_the_next_lane(
        app, client, db, owner, worker, fakes):
    ws, secret = owner
    fake = fakes["openai"]
    fake.batch_script = [("in_progress", 0.0)]  # never moves
    items = [chat(f"st-{i}", "gpt-4o-mini", f"Q{i}") for i in range(3)]
    _q, batch = quote_and_create(client, secret, items)
    drive(db, worker, batch["id"], timeout=30)

    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert body["status"] == "completed" and body["counts"]["succeeded"] == 3, body
    [stuck] = fake.batches.values()
    assert stuck["status"] == "cancelled"  # abandoned on the provider side too
    rows = receipt(client, secret, batch["id"])
    for row in rows.values():
        assert row["attempts"][0]["lane"] == "openai/gpt-4o-mini/batch"
        assert row["attempts"][0]["error"]["code"] == "provider_stalled"
        assert row["attempts"][-1]["outcome"] == "succeeded"
        assert row["final_lane"] != "openai/gpt-4o-mini/batch"
    # A late answer from the abandoned provider batch is recorded but never billed.
    stalled = next(u for u in units_of(db, batch["id"]) if u.lane.endswith("/batch"))
    settled_before = get_json(client, secret, f"/v1/batches/{batch['id']}")["cost_usd"]
    target = items_of(db, batch["id"])[0]
    with db.session() as s:
        ingest(s, stalled.id, [ItemResult(target.id, True, output={"text": "late"},
                                          usage={"input_tokens": 9, "output_tokens": 9},
                                          provider_request_id="req_late")])
    row = receipt(client, secret, batch["id"])[target.customer_item_id]
    assert row["attempts"][-1]["outcome"] == "late_ignored"
    assert row["charged"] == rows[target.customer_item_id]["charged"]
    assert get_json(client, secret, f"/v1/batches/{batch['id']}")["cost_usd"] == settled_before
    assert_settled_once(db, ws, batch["id"])


def test_an_expired_provider_batch_keeps_finished_items_and_reroutes_the_rest(
        app, client, db, owner, worker, fakes):
    ws, secret = owner
    fake = fakes["openai"]
    fake.batch_script = [("in_progress", 0.5), ("expired", 0.5)]
    fake.expire_keep = 2
    items = [chat(f"ex-{i}", "gpt-4o-mini", f"Q{i}") for i in range(4)]
    _q, batch = quote_and_create(client, secret, items)
    drive(db, worker, batch["id"], timeout=30)

    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert body["status"] == "completed" and body["counts"]["succeeded"] == 4, body
    rows = receipt(client, secret, batch["id"])
    on_batch = [k for k, r in rows.items() if r["final_lane"] == "openai/gpt-4o-mini/batch"]
    assert len(on_batch) == 2
    moved = [r for k, r in rows.items() if k not in on_batch]
    assert all(r["attempts"][0]["error"]["code"] == "provider_batch_expired" for r in moved)
    assert all(r["attempts"][-1]["outcome"] == "succeeded" for r in moved)
    assert_counts_match_items(db, batch["id"])
    assert_settled_once(db, ws, batch["id"])


def test_native_submit_adopts_the_provider_batch_a_crashed_run_created(
        app, client, db, owner, worker, fakes):
    """A worker died after the provider accepted the batch but before the handle was
    committed: the re-run finds the batch by its unit tag instead of creating a second one."""
    ws, secret = owner
    fake = fakes["openai"]
    with db.session() as s:  # hold dispatch until the "crash" is staged
        s.execute(update(Offering).where(Offering.provider_slug == "sandbox")
                  .values(enabled=False))
    _q, batch = quote_and_create(client, secret, [chat("c-1", "gpt-4o-mini"),
                                                  chat("c-2", "gpt-4o-mini", "Two")])
    [unit] = units_of(db, batch["id"])
    rows = read(db, lambda s: s.execute(select(Item.id, Item.line).where(
        Item.work_unit_id == unit.id)).all())
    crashed_at = time.time()
    connect("openai", Connection("openai", fake.url + "/v1", "sk-test-openai")).submit(
        "gpt-4o-mini", "batch", [build_request(i, line) for i, line in rows], tag=unit.id)
    with db.session() as s:
        s.get(WorkUnit, unit.id).handle = {"intent_at": crashed_at}
    drive(db, worker, batch["id"])

    assert len(fake.batches) == 1 and len(fake.stub.received("POST", "/v1/files")) == 1
    body = get_json(client, secret, f"/v1/batches/{batch['id']}")
    assert body["status"] == "completed" and body["counts"]["succeeded"] == 2
    assert_settled_once(db, ws, batch["id"])


def test_anthropic_errored_and_expired_results_are_classified(
        app, client, db, owner, worker, fakes):
    ws, secret = owner
    fake = fakes["anthropic"]
    items = [chat(f"a-{i}", "claude-haiku-4-5", f"Q{i}") for i in range(3)]
    _q, batch = quote_and_create(client, secret, items,
                                 provider_preferences={"allow_fallbacks": False})
    ids = {i.customer_item_id: i.id for i in items_of(db, batch["id"])}
    fake.errored = {ids["a-0"]: "invalid_request_error", ids["a-1"]: "api_error"}
    drive(db, worker, batch["id"])

    rows = receipt(client, secret, batch["id"])
    assert rows["a-0"]["status"] == "failed" and len(rows["a-0"]["attempts"]) == 1
    assert rows["a-0"]["attempts"][0]["error"]["code"] == "invalid_request"
    # api_error is transient: retried on the same lane (no fallback allowed) and succeeds.
    assert [a["outcome"] for a in rows["a-1"]["attempts"]] == ["failed", "succeeded"]
    assert {a["lane"] for a in rows["a-1"]["attempts"]} == {"anthropic/claude-haiku-4-5/batch"}
    assert rows["a-2"]["status"] == "succeeded"
    _results, errors = artifacts(client, secret, batch["id"])
    assert [(e["customer_item_id"], e["error"]["code"]) for e in errors] == \
        [("a-0", "invalid_request")]
    assert len(fake.batches) == 2
    assert json.loads(json.dumps(rows["a-2"]["usage"]))["output_tokens"] == 9
    assert_settled_once(db, ws, batch["id"])
