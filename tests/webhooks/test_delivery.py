"""Delivery through a real RQ worker to loopback receivers: signing, retries, failure, 410,
redirects, DNS rebinding at connect time."""
import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from standardwebhooks import Webhook

from batchrouter.db import utcnow
from batchrouter.models import EmailMessage, WebhookAttempt, WebhookEndpoint
from batchrouter.webhooks import delivery as pump_module
from batchrouter.webhooks import targets
from tests.factories import bearer, read
from tests.webhooks.conftest import deliveries, travel

HOOK = "/v1/auth/account/delivery-webhook"

pytestmark = pytest.mark.pg


def register(client, owner, url, **extra):
    response = client.put(HOOK, json={"url": url, **extra}, headers=bearer(owner["secret"]))
    assert response.status_code in (200, 201), response.get_json()
    return response.get_json()


def send_test(client, owner):
    response = client.post(HOOK + "/test", headers=bearer(owner["secret"]))
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def attempts(db, delivery_id):
    return read(db, lambda s: s.scalars(select(WebhookAttempt).where(
        WebhookAttempt.delivery_id == delivery_id).order_by(WebhookAttempt.number)).all())


def emails(db, template):
    return read(db, lambda s: s.scalars(select(EmailMessage)
                                        .where(EmailMessage.template == template)).all())


def test_fails_twice_then_succeeds_three_attempts_one_webhook_id(app, client, db, worker,
                                                                  owner, receiver):
    import time
    before = {o: delivery_metric(o) for o in ("retrying", "delivered")}
    endpoint = register(client, owner, receiver.url + "/hook")
    assert endpoint["secret"].startswith("whsec_")
    receiver.plan = [(500, {"e": 1}), (503, {"e": 2}, {"Retry-After": "1"}), (200, {"ok": 1})]
    queued = send_test(client, owner)
    worker()
    for _ in range(2):
        time.sleep(1.05)  # a later second: the fresh timestamp must differ
        travel(db)
        worker()
    got = receiver.received("POST", "/hook")
    assert len(got) == 3
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert len({r.headers["webhook-timestamp"] for r in got}) == 3
    for r in got:  # each attempt is signed for its own timestamp
        Webhook(endpoint["secret"]).verify(r.body, r.headers)
    [d] = deliveries(db)
    assert d.id == queued["id"] and d.status == "succeeded" and d.attempts == 3
    log = attempts(db, d.id)
    assert [a.status_code for a in log] == [500, 503, 200]
    assert log[0].response_excerpt == '{"e": 1}' and log[0].error == "HTTP 500"
    assert all(a.latency_ms >= 0 for a in log)
    body = client.get(f"/v1/webhook-deliveries/{d.id}", headers=bearer(owner["secret"]))
    assert [a["status_code"] for a in body.get_json()["attempts"]] == [500, 503, 200]
    assert delivery_metric("retrying") - before["retrying"] == 2
    assert delivery_metric("delivered") - before["delivered"] == 1


def delivery_metric(outcome: str) -> float:
    from batchrouter.metrics import REGISTRY

    return REGISTRY.get_sample_value("batchrouter_webhook_deliveries_total",
                                     {"outcome": outcome}) or 0.0


def test_schedule_runs_out_then_failed_and_one_email(app, client, db, worker, owner, receiver):
    register(client, owner, receiver.url + "/hook")
    receiver.plan = [(500, {"down": True})]
    send_test(client, owner)
    send_test(client, owner)
    worker()
    for _ in range(pump_module.MAX_ATTEMPTS):
        travel(db)
        worker()
    assert [d.status for d in deliveries(db)] == ["failed", "failed"]
    assert [d.attempts for d in deliveries(db)] == [10, 10]
    assert len(receiver.received("POST", "/hook")) == 20
    [mail] = emails(db, "webhook_failed")
    assert mail.to == "owner@example.com" and receiver.url in mail.text
    endpoint = read(db, lambda s: s.scalars(select(WebhookEndpoint)).one())
    assert endpoint.status == "active"  # 4 days of failure: not yet disabled


def test_schedule_matches_spec():
    assert pump_module.SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    for n, base in enumerate(pump_module.SCHEDULE, start=1):
        assert base * 0.9 <= pump_module.next_delay(n) <= base * 1.1
    assert pump_module.next_delay(10) is None
    assert pump_module.next_delay(1, retry_after=600) >= 600


def test_gone_disables_the_endpoint_and_emails(app, client, db, worker, owner, receiver):
    register(client, owner, receiver.url + "/hook")
    receiver.plan = [(410, {})]
    send_test(client, owner)
    worker()
    [d] = deliveries(db)
    assert d.status == "failed" and d.attempts == 1
    endpoint = client.get(HOOK, headers=bearer(owner["secret"])).get_json()
    assert endpoint["status"] == "disabled" and "410" in endpoint["disabled_reason"]
    assert len(emails(db, "webhook_disabled")) == 1
    refused = client.post(f"/v1/webhook-deliveries/{d.id}/redeliver",
                          headers=bearer(owner["secret"]))
    assert refused.status_code == 409
    assert refused.get_json()["error"]["code"] == "webhook_endpoint_disabled"
    register(client, owner, receiver.url + "/hook")  # saving again re-enables
    assert client.get(HOOK, headers=bearer(owner["secret"])).get_json()["status"] == "active"


def test_five_days_of_failure_disables(app, client, db, worker, owner, receiver):
    register(client, owner, receiver.url + "/hook")
    receiver.plan = [(500, {})]
    with db.session() as s:
        s.execute(update(WebhookEndpoint).values(failing_since=utcnow() - timedelta(days=5)))
    send_test(client, owner)
    worker()
    endpoint = read(db, lambda s: s.scalars(select(WebhookEndpoint)).one())
    assert endpoint.status == "disabled" and "5 days" in endpoint.disabled_reason
    assert len(emails(db, "webhook_disabled")) == 1


def test_redirect_is_a_failure_and_not_followed(app, client, db, worker, owner, receiver):
    register(client, owner, receiver.url + "/hook")
    receiver.route("POST", "/elsewhere", lambda req: (200, {}))
    receiver.plan = [(302, {}, {"Location": receiver.url + "/elsewhere"})]
    send_test(client, owner)
    worker()
    [d] = deliveries(db)
    assert d.status == "pending" and d.attempts == 1 and d.last_status_code == 302
    assert "not followed" in d.last_error
    assert receiver.received("POST", "/elsewhere") == []


@pytest.mark.parametrize("app_overrides", [{"WEBHOOKS_ALLOW_PRIVATE_TARGETS": False}],
                         indirect=True)
def test_rebinding_to_loopback_is_blocked_at_connect(app, client, db, worker, owner, listener,
                                                     monkeypatch):
    answers = {"n": 0}

    def rebinding(host, port):
        answers["n"] += 1
        return ["93.184.216.34"] if answers["n"] == 1 else ["127.0.0.1"]
    monkeypatch.setattr(targets, "RESOLVER", rebinding)
    url = f"https://rebind.example:{listener.port}/hook"
    register(client, owner, url)  # public at registration
    send_test(client, owner)
    worker()
    [d] = deliveries(db)
    [attempt] = attempts(db, d.id)
    assert attempt.error.startswith("blocked:") and "127.0.0.1" in attempt.error
    assert listener.hits == 0 and answers["n"] == 2


def test_rotation_signs_with_both_secrets_during_overlap(app, client, db, worker, owner,
                                                         receiver):
    first = register(client, owner, receiver.url + "/hook")["secret"]
    rotated = client.post(HOOK + "/rotate-secret", json={"overlap_seconds": 3600},
                          headers=bearer(owner["secret"])).get_json()
    assert rotated["secret"] != first and rotated["previous_secret_expires_at"]
    assert "secret" not in client.get(HOOK, headers=bearer(owner["secret"])).get_json()
    send_test(client, owner)
    worker()
    [got] = receiver.received("POST", "/hook")
    for secret in (first, rotated["secret"]):
        Webhook(secret).verify(got.body, got.headers)
    assert len(got.headers["x-batchrouter-signature"].split(" ")) == 2
    json.loads(got.body)
