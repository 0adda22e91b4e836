"""The OpenAI surface through the official SDK: lists and pagination, cancel, failed
validation, credits, errors, retries (SPEC §6)."""
from __future__ import annotations

import threading
import time

import openai
import pytest
import requests
from sqlalchemy import func, select

from batchrouter import ledger, openai_batches, quotes
from batchrouter.models import Batch, OpenAIBatch, Quote, Reservation
from tests.factories import read
from tests.openai_compat.conftest import (
    chat_line,
    embed_line,
    jsonl,
    parse_jsonl,
    poor_tenant,
    sdk,
    upload,
)


def create(client, file_id, endpoint="/v1/chat/completions", **extra):
    return client.batches.create(input_file_id=file_id, endpoint=endpoint,
                                 completion_window="24h", **extra)


def count(db, model) -> int:
    return read(db, lambda s: s.scalar(select(func.count()).select_from(model)))


def test_files_list_paginate_retrieve_delete(client, tenant):
    ids = [upload(client, [chat_line(i)], name=f"part-{i}.jsonl").id for i in range(5)]
    page = client.files.list(limit=2)
    assert [f.id for f in page.data] == ids[::-1][:2] and page.has_more
    # The SDK's auto-pagination follows `after` through every page.
    assert [f.id for f in client.files.list(limit=2)] == ids[::-1]
    assert [f.id for f in client.files.list(order="asc", limit=3)] == ids
    assert [f.id for f in client.files.list(purpose="batch_output")] == []
    raw = client.files.with_raw_response.list(limit=2).http_response.json()
    assert raw["object"] == "list" and raw["first_id"] == ids[4] and raw["last_id"] == ids[3]
    retrieved = client.files.retrieve(ids[0])
    assert retrieved.filename == "part-0.jsonl" and retrieved.purpose == "batch"
    assert parse_jsonl(client.files.content(ids[0]).text) == [chat_line(0)]
    deleted = client.files.delete(ids[0])
    assert deleted.deleted and deleted.id == ids[0]
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(ids[0])
    with pytest.raises(openai.NotFoundError):
        client.files.content(ids[0])
    assert ids[0] not in [f.id for f in client.files.list()]


def test_upload_rules(client, tenant):
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("data.csv", b"a,b\n"), purpose="batch")
    assert exc.value.code == "invalid_file_format" and exc.value.param == "file"
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("data.jsonl", jsonl([chat_line(0)])), purpose="fine-tune")
    assert exc.value.param == "purpose"
    assert exc.value.response.headers["x-should-retry"] == "false"


@pytest.mark.pg
def test_batches_list_and_pagination(client, tenant, worker):
    file_id = upload(client, [chat_line(0)]).id
    ids = [create(client, file_id, metadata={"n": str(i)}).id for i in range(5)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]
    after = client.batches.list(after=ids[2], limit=10)
    assert [b.id for b in after.data] == [ids[1], ids[0]] and not after.has_more
    raw = client.batches.with_raw_response.list(limit=3).http_response.json()
    assert set(raw) >= {"object", "data", "first_id", "last_id", "has_more"}
    assert raw["first_id"] == ids[4] and raw["last_id"] == ids[2] and raw["has_more"] is True
    worker()
    assert {b.status for b in client.batches.list()} == {"completed"}


def test_cancel(client, tenant, live_server, worker):
    batch = create(client, upload(client, [chat_line(i) for i in range(4)]).id)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    worker()
    done = client.batches.retrieve(batch.id)
    assert done.status == "cancelled" and done.cancelled_at >= done.cancelling_at
    assert done.output_file_id is None
    lines = parse_jsonl(client.files.content(done.error_file_id).text)
    assert len(lines) == 4 and done.request_counts.failed == 4
    assert {(line["response"], line["error"]["code"]) for line in lines} == \
        {(None, "batch_cancelled")}
    assert done.batchrouter["cost_usd"]["settled"] == "0.000000"
    with pytest.raises(openai.ConflictError) as exc:
        client.batches.cancel(batch.id)
    assert exc.value.response.headers["x-should-retry"] == "false"


def test_invalid_file_gives_failed_batch_with_line_errors(client, tenant, live_server):
    lines = jsonl([chat_line(0), chat_line(1, model="no-such-model")]) + b"{not json\n"
    uploaded = client.files.create(file=("bad.jsonl", lines), purpose="batch")
    assert uploaded.status == "error" and "line" in uploaded.status_details
    before = count(live_server.app.extensions["batchrouter"].db, Reservation)
    batch = create(client, uploaded.id)
    assert batch.status == "failed" and batch.failed_at is not None
    assert {(e.line, e.code) for e in batch.errors.data} == \
        {(2, "unknown_model"), (3, "invalid_json")}
    assert batch.output_file_id is None and batch.request_counts.total == 0
    assert client.batches.retrieve(batch.id).status == "failed"
    db = live_server.app.extensions["batchrouter"].db
    assert count(db, Reservation) == before and count(db, Batch) == 0
    assert count(db, Quote) == 0


def test_lines_must_match_the_endpoint(client, tenant, live_server):
    uploaded = upload(client, [chat_line(0), embed_line(1)])
    batch = create(client, uploaded.id)
    assert batch.status == "failed"
    assert [(e.line, e.code, e.param) for e in batch.errors.data] == \
        [(2, "mismatched_endpoint", "url")]
    assert count(live_server.app.extensions["batchrouter"].db, Batch) == 0


def test_unroutable_lines_are_validation_errors(client, tenant):
    """A model no lane can serve under the metadata's privacy tier is a line error."""
    cloud = [chat_line(0, model="gpt-4o-mini")]
    batch = create(client, upload(client, cloud).id)
    assert batch.status == "failed" and batch.errors.data[0].code == "no_eligible_lane"
    assert batch.errors.data[0].line == 1


def test_insufficient_credits_is_a_402(live_server, tenant, session):
    workspace_id, secret = poor_tenant(session)
    client = sdk(live_server, secret, max_retries=0)
    file_id = upload(client, [chat_line(0)]).id
    with pytest.raises(openai.APIStatusError) as exc:
        create(client, file_id)
    assert exc.value.status_code == 402 and exc.value.code == "insufficient_credits"
    assert exc.value.type == "insufficient_quota"
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert exc.value.body["message"].startswith("This batch needs")
    assert client.batches.list().data == []
    assert read(live_server.app.extensions["batchrouter"].db,
                lambda s: ledger.balances(s, workspace_id).reserved) == 0


def test_routing_controls_ride_in_metadata(client, tenant, live_server):
    file_id = upload(client, [chat_line(0)]).id
    batch = create(client, file_id, metadata={"sla_tier": "flex", "routing_mode": "sla_aware",
                                              "privacy_tier": "zdr", "max_price": "5.00"})
    assert batch.expires_at - batch.created_at == 48 * 3600
    assert (batch.batchrouter["sla_tier"], batch.batchrouter["routing_mode"],
            batch.batchrouter["privacy_tier"]) == ("flex", "sla_aware", "zdr")
    with pytest.raises(openai.BadRequestError) as exc:
        create(client, file_id, metadata={"routing_mode": "fastest"})
    assert exc.value.param == "metadata.routing_mode"
    with pytest.raises(openai.UnprocessableEntityError) as exc:
        create(client, file_id, metadata={"max_price": "0.000001"})
    assert exc.value.code == "over_max_price"
    with pytest.raises(openai.BadRequestError) as exc:
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                              completion_window="1h")
    assert exc.value.param == "completion_window"
    with pytest.raises(openai.BadRequestError) as exc:
        client.batches.create(input_file_id=file_id, endpoint="/v1/moderations",
                              completion_window="24h")
    assert exc.value.param == "endpoint"


def test_unknown_ids_and_keys(client, tenant, live_server):
    for call in (lambda: client.batches.retrieve("bat_nope"),
                 lambda: client.batches.cancel("bat_nope"),
                 lambda: client.files.retrieve("file_nope"),
                 lambda: client.files.delete("file_nope"),
                 lambda: create(client, "file_nope")):
        with pytest.raises(openai.NotFoundError) as exc:
            call()
        assert set(exc.value.body) >= {"message", "type", "param", "code"}
        assert exc.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.AuthenticationError) as exc:
        sdk(live_server, "br_live_wrong", max_retries=0).batches.list()
    assert exc.value.type == "authentication_error"
    missing = requests.get(live_server.url + "/openai/v1/fine_tuning/jobs",
                        headers={"Authorization": f"Bearer {tenant[1]}"}, timeout=10)
    assert missing.status_code == 404 and set(missing.json()["error"]) == \
        {"message", "type", "param", "code"}


def test_other_workspaces_see_nothing(client, tenant, live_server, session):
    _ws, other_secret = poor_tenant(session)
    batch = create(client, upload(client, [chat_line(0)]).id)
    other = sdk(live_server, other_secret, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(batch.input_file_id)
    assert other.batches.list().data == [] and other.files.list().data == []


@pytest.mark.pg
def test_sdk_retry_after_timeout_creates_one_batch(live_server, tenant, monkeypatch):
    """The first POST /batches outlives the client's timeout; the SDK retries the same body
    (no idempotency header of its own). Both while the first is still creating and after it
    finished, the retry gets the first batch back."""
    db = live_server.app.extensions["batchrouter"].db
    slow = {"create_quote": 1}
    real_quote = quotes.create_quote

    def slow_quote(*args, **kwargs):
        if slow["create_quote"]:
            slow["create_quote"] -= 1
            time.sleep(1.5)  # the client gives up meanwhile; this request still finishes
        return real_quote(*args, **kwargs)

    monkeypatch.setattr(quotes, "create_quote", slow_quote)
    client = sdk(live_server, tenant[1], max_retries=3, timeout=0.8)
    file_id = upload(client, [chat_line(0)]).id
    batch = create(client, file_id, metadata={"run": "a"})
    assert count(db, Batch) == 1 and count(db, OpenAIBatch) == 1
    assert client.batches.retrieve(batch.id).request_counts.total == 1

    # Slow *response* this time: the batch exists when the retry arrives.
    real_get = openai_batches.get
    calls = {"n": 0}

    def slow_get(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(1.5)
        return real_get(*args, **kwargs)

    monkeypatch.setattr(openai_batches, "get", slow_get)
    second = create(client, file_id, metadata={"run": "b"})
    time.sleep(1)  # let the first (abandoned) request finish too
    assert count(db, Batch) == 2 and second.id != batch.id
    ids = {b.id for b in client.batches.list()}
    assert ids == {batch.id, second.id}


def test_identical_create_is_deduplicated_but_idempotency_key_rules(client, tenant, live_server):
    db = live_server.app.extensions["batchrouter"].db
    file_id = upload(client, [chat_line(0)]).id
    first = create(client, file_id)
    assert create(client, file_id).id == first.id
    assert count(db, Batch) == 1
    # A client that sends its own Idempotency-Key gets the stored response for that key.
    keyed = create(client, file_id, metadata={"k": "1"},
                   extra_headers={"Idempotency-Key": "job-42"})
    again = client.batches.with_raw_response.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h",
        metadata={"k": "1"}, extra_headers={"Idempotency-Key": "job-42"})
    assert again.headers["Idempotent-Replayed"] == "true" and again.parse().id == keyed.id
    assert count(db, Batch) == 2


@pytest.mark.pg
def test_concurrent_identical_creates_make_one_batch(live_server, tenant):
    db = live_server.app.extensions["batchrouter"].db
    client = sdk(live_server, tenant[1], max_retries=2, timeout=30)
    file_id = upload(client, [chat_line(i) for i in range(3)]).id
    results, errors = [], []

    def go():
        try:
            results.append(create(client, file_id, metadata={"same": "yes"}).id)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(set(results)) == 1 and count(db, Batch) == 1


def test_scopes(live_server, tenant, session):
    from tests.factories import make_key, make_user
    user = make_user(session, "reader@example.com")
    _key, secret = make_key(session, user, scopes=["read"])
    reader = sdk(live_server, secret, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as exc:
        reader.files.create(file=("a.jsonl", jsonl([chat_line(0)])), purpose="batch")
    assert exc.value.code == "insufficient_scope"
    assert reader.batches.list().data == []


def test_test_mode_key_reserves_nothing(live_server, tenant, session, worker):
    from tests.factories import make_key, make_user
    user = make_user(session, "tester@example.com")
    _key, secret = make_key(session, user, mode="test")
    client = sdk(live_server, secret, max_retries=0)
    batch = create(client, upload(client, [chat_line(0)]).id)
    assert batch.batchrouter["mode"] == "test"
    assert batch.batchrouter["cost_usd"]["reserved"] == "0.000000"
    worker()
    assert client.batches.retrieve(batch.id).status == "completed"


def finish(client, worker, batch_id: str, timeout: float = 20):
    """Run the workers until the batch is terminal (a fallback unit starts after a delay)."""
    deadline = time.monotonic() + timeout
    while True:
        worker()
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, batch.status
        time.sleep(0.3)


def test_failed_lines_go_to_the_error_file(client, tenant, worker, monkeypatch):
    """A provider refusal keeps its status code in `response`; a batch where nothing
    succeeded is OpenAI's `completed` with every line in the error file."""
    from tests.lifecycle.test_artifacts_api import fail_items

    fail_items(monkeypatch, "req-1", "solo-0")
    mixed = finish(client, worker, create(client, upload(client, [chat_line(i) for i in
                                                                  range(3)]).id).id)
    assert mixed.status == "completed"
    assert (mixed.request_counts.completed, mixed.request_counts.failed) == (2, 1)
    ok = parse_jsonl(client.files.content(mixed.output_file_id).text)
    assert [line["custom_id"] for line in ok] == ["req-0", "req-2"]
    [bad] = parse_jsonl(client.files.content(mixed.error_file_id).text)
    assert bad["custom_id"] == "req-1" and bad["error"] is None
    assert bad["response"]["status_code"] == 400
    assert bad["response"]["request_id"] == "req_400"
    assert bad["response"]["body"]["error"]["message"] == "Rejected by the provider."

    none = finish(client, worker, create(client, upload(client, [chat_line(0, prefix="solo")])
                                         .id).id)
    assert none.status == "completed" and none.batchrouter["status"] == "failed"
    assert none.output_file_id is None and none.request_counts.failed == 1
    assert len(parse_jsonl(client.files.content(none.error_file_id).text)) == 1
    listed = {f.id for f in client.files.list(purpose="batch_output")}
    assert listed == {mixed.output_file_id, mixed.error_file_id, none.error_file_id}
