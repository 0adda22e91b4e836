"""Every batch transition reaches the receiver as a verifiable event (SPEC §7)."""
import json
import threading
import time

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from batchrouter.models import WebhookEvent
from tests.factories import bearer, make_key, make_user, read
from tests.lifecycle.helpers import chat_items, create, quote
from tests.lifecycle.support import drive, local
from tests.webhooks.conftest import deliveries

pytestmark = pytest.mark.pg


def events_of(receiver):
    """Received events in the order they happened (deliveries run concurrently, so arrival
    order is not guaranteed; event ids sort by creation time)."""
    return sorted((json.loads(r.body) for r in receiver.received("POST", "/hook")),
                  key=lambda e: e["id"])


def test_batch_webhook_gets_submitted_progress_completed(app, client, db, worker, owner,
                                                         receiver, seeded_catalog):
    items = chat_items(5)
    q = quote(client, owner["secret"], items)
    response = create(client, owner["secret"], items, q["id"],
                      webhook={"url": receiver.url + "/hook", "secret": "batch-secret-1"})
    assert response.status_code == 201, response.get_json()
    batch_id = response.get_json()["id"]
    drive(db, worker, batch_id)
    worker()  # the terminal event's pump
    got = receiver.received("POST", "/hook")
    types = [e["type"] for e in events_of(receiver)]
    assert types[0] == "batch.submitted" and types[-1] == "batch.completed"
    assert types.count("batch.progress") == 1  # at most one per 30 s
    for r in got:
        Webhook(b"batch-secret-1").verify(r.body, r.headers)
    final = events_of(receiver)[-1]
    assert final["id"].startswith("evt_")
    assert final["id"] in {r.headers["webhook-id"] for r in got}
    data = final["data"]
    assert data["batch_id"] == batch_id and data["status"] == "completed"
    assert data["counts"]["succeeded"] == 5 and data["cost_usd"]["settled"]
    results = client.get(local(data["results_url"]))
    assert results.status_code == 200 and len(results.data.splitlines()) == 5
    stored = read(db, lambda s: s.scalars(select(WebhookEvent)).all())
    assert "batch-secret-1" not in json.dumps([e.body for e in stored])
    batch_row = client.get(f"/v1/batches/{batch_id}", headers=bearer(owner["secret"]))
    assert "batch-secret-1" not in batch_row.get_data(as_text=True)


def test_default_endpoint_gets_quoted_and_cancelled(app, client, db, worker, owner, receiver,
                                                    seeded_catalog):
    client.put("/v1/auth/account/delivery-webhook", json={"url": receiver.url + "/hook"},
               headers=bearer(owner["secret"]))
    items = chat_items(3)
    q = quote(client, owner["secret"], items)
    batch_id = create(client, owner["secret"], items, q["id"]).get_json()["id"]
    client.post(f"/v1/batches/{batch_id}/cancel", headers=bearer(owner["secret"]))
    drive(db, worker, batch_id)
    worker()
    types = [e["type"] for e in events_of(receiver)]
    assert types[:2] == ["batch.quoted", "batch.submitted"] and types[-1] == "batch.cancelled"
    quoted = events_of(receiver)[0]["data"]
    assert quoted["quote_id"] == q["id"] and quoted["counts"]["total"] == 3


def test_no_endpoint_no_events(app, client, db, worker, owner, seeded_catalog):
    items = chat_items(2)
    q = quote(client, owner["secret"], items)
    drive(db, worker, create(client, owner["secret"], items, q["id"]).get_json()["id"])
    assert read(db, lambda s: s.scalars(select(WebhookEvent)).all()) == []


@pytest.mark.parametrize("allow_private,webhook,code", [
    (False, {"url": "https://127.0.0.1/x"}, "webhook_target_refused"),
    (False, {"url": "https://u:p@example.com/x"}, "webhook_target_refused"),
    (False, {"url": "http://hooks.example.com/x"}, "webhook_target_refused"),
    (True, {"url": "http://169.254.169.254/"}, "webhook_target_refused"),
    (True, {"url": "http://127.0.0.1/x", "secret": "short"}, "invalid_webhook_secret"),
    (True, {"url": "http://127.0.0.1/x", "extra": 1}, "invalid_webhook"),
    (True, "https://example.com", "invalid_webhook"),
])
def test_batch_webhook_is_validated_on_create(app, client, owner, seeded_catalog, allow_private,
                                              webhook, code):
    app.config["WEBHOOKS_ALLOW_PRIVATE_TARGETS"] = allow_private
    items = chat_items(1)
    q = quote(client, owner["secret"], items)
    response = create(client, owner["secret"], items, q["id"], webhook=webhook)
    assert response.status_code == 422 and response.get_json()["error"]["code"] == code


def test_slow_receiver_does_not_delay_another_workspace(app, client, db, worker, session,
                                                        receiver):
    """Workspace A's receiver hangs 2 s per request; B's event still goes out at once."""
    from tests.stubs import StubServer

    gate = threading.Event()
    slow = StubServer()
    slow.route("POST", "/hook", lambda req: (gate.wait(2), (200, {}))[1])
    slow.start()
    try:
        owners = []
        for email, url in (("a@example.com", slow.url), ("b@example.com", receiver.url)):
            user = make_user(session, email)
            _key, secret = make_key(session, user)
            client.put("/v1/auth/account/delivery-webhook", json={"url": url + "/hook"},
                       headers=bearer(secret))
            owners.append(secret)
        for _ in range(6):
            client.post("/v1/auth/account/delivery-webhook/test", headers=bearer(owners[0]))
        client.post("/v1/auth/account/delivery-webhook/test", headers=bearer(owners[1]))
        started = time.monotonic()
        threading.Timer(1.5, gate.set).start()  # release the hung requests after 1.5 s
        worker()
        assert receiver.times and receiver.times[0] - started < 1.0
        assert len(slow.received("POST", "/hook")) == 6
        assert {d.status for d in deliveries(db)} == {"succeeded"}
    finally:
        gate.set()
        slow.stop()
