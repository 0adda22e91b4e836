"""Transactional email: one layout for HTML and text, Resend retried until it answers (one
email), and Resend's signed delivery webhooks updating the record."""
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from batchrouter import email as mail
from batchrouter.models import EmailMessage
from tests.factories import bearer, read
from tests.stubs import StubServer

RESEND_SECRET = "whsec_" + "c2VjcmV0LWZvci1yZXNlbmQtd2ViaG9va3MtdGVzdHM="
TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "email"


@pytest.fixture
def resend_stub():
    stub = StubServer()
    stub.route("POST", "/emails", [(500, {"message": "try later"}),
                                   (200, {"id": "re_ok_1"})])
    stub.start()
    yield stub
    stub.stop()


@pytest.fixture
def app_overrides(request, tmp_path, resend_stub):
    return {"WEBHOOKS_ALLOW_PRIVATE_TARGETS": True, "RESEND_API_KEY": "re_test",
            "RESEND_API_URL": resend_stub.url, "BATCHROUTER_RESEND_WEBHOOK_SECRET": RESEND_SECRET}


def test_every_email_has_text_and_html_on_one_layout():
    names = ["account_deleted", "account_exists", "batch_finished", "email_change_confirm",
             "email_change_notice", "email_changed", "invitation", "password_changed",
             "privacy_confirm", "privacy_update", "credits_added", "low_balance",
             "reset_password", "verify_email", "webhook_disabled", "webhook_failed"]
    for name in names:
        assert (TEMPLATES / f"{name}.txt").exists(), name
        html = (TEMPLATES / f"{name}.html").read_text()
        assert html.startswith('{% extends "_layout.html" %}'), name
    subject, text, html = mail.render("webhook_disabled", {
        "url": "https://hooks.example.com/<x>", "reason": "the receiver answered 410 Gone",
        "console_url": "http://127.0.0.1:5000/webhook-endpoints/whe_1"})
    assert subject == "Webhook endpoint https://hooks.example.com/<x> was disabled"
    assert "410 Gone" in text and text.rstrip().endswith("account or workspace.")
    assert "https://hooks.example.com/&lt;x&gt;" in html and "<!doctype html>" in html
    assert 'href="http://127.0.0.1:5000/webhook-endpoints/whe_1"' in html


def test_failing_webhook_email_goes_through_resend_retried_once_sent(
        app, client, db, worker, owner, receiver, resend_stub):
    """Resend answers 500 then 200: the job is retried with backoff and one email goes out."""
    client.put("/v1/auth/account/delivery-webhook", json={"url": receiver.url + "/hook"},
               headers=bearer(owner["secret"]))
    receiver.plan = [(410, {})]
    client.post("/v1/auth/account/delivery-webhook/test", headers=bearer(owner["secret"]))
    worker()  # delivery → 410 → disabled → email queued → Resend 500 → RQ schedules a retry
    [message] = read(db, lambda s: s.scalars(select(EmailMessage)).all())
    assert message.template == "webhook_disabled" and message.status == "queued"
    assert message.attempts == 1 and "try later" in (message.last_error or "")
    _run_scheduled_retries(app, worker)
    [message] = read(db, lambda s: s.scalars(select(EmailMessage)).all())
    assert message.status == "sent" and message.provider_id == "re_ok_1"
    sent = resend_stub.received("POST", "/emails")
    assert len(sent) == 2 and sent[0].headers["idempotency-key"] == \
        sent[1].headers["idempotency-key"]
    assert sent[1].json["html"].startswith("<!doctype html>")


def _run_scheduled_retries(app, worker):
    """Run RQ's scheduled retries now (time travel for the 10 s backoff). They are enqueued
    here rather than by the next burst worker's scheduler: that one may not get the scheduler
    lock the previous burst worker still holds, and would then leave them waiting."""
    from rq import Queue
    from rq.job import Job
    from rq.registry import ScheduledJobRegistry

    redis = app.extensions["batchrouter"].redis
    for name in app.config["BATCHROUTER_QUEUES"]:
        registry = ScheduledJobRegistry(name, connection=redis)
        for job_id in registry.get_job_ids():
            registry.remove(job_id)
            Queue(name, connection=redis).enqueue_job(Job.fetch(job_id, connection=redis))
    worker()


def _signed(body: dict, secret=RESEND_SECRET):
    raw = json.dumps(body)
    msg_id = "msg_1"
    now = datetime.now(tz=UTC)
    signature = Webhook(secret).sign(msg_id, now, raw)
    return raw, {"svix-id": msg_id, "svix-timestamp": str(int(now.timestamp())),
                 "svix-signature": signature, "Content-Type": "application/json"}


def test_resend_delivery_webhook_updates_the_record(app, client, db):
    with db.session() as s:
        s.add(EmailMessage(to="a@example.com", subject="s", text="t", html="h",
                           template="verify_email", idempotency_key="k1", status="sent",
                           provider_id="re_123"))
    raw, headers = _signed({"type": "email.delivered", "created_at": "2026-11-27T08:00:00Z",
                            "data": {"email_id": "re_123"}})
    assert client.post("/webhooks/resend", data=raw, headers=headers).status_code == 204
    raw_old, headers_old = _signed({"type": "email.sent", "created_at": "2026-11-27T07:00:00Z",
                                    "data": {"email_id": "re_123"}})
    client.post("/webhooks/resend", data=raw_old, headers=headers_old)
    message = read(db, lambda s: s.scalars(select(EmailMessage)).one())
    assert message.delivery_status == "delivered"
    forged, forged_headers = _signed({"type": "email.bounced", "data": {"email_id": "re_123"}},
                                     secret="whsec_" + "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==")
    response = client.post("/webhooks/resend", data=forged, headers=forged_headers)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_signature"
    assert read(db, lambda s: s.scalars(select(EmailMessage)).one()).delivery_status == \
        "delivered"


def test_text_only_template_still_gets_the_layout(tmp_path, monkeypatch):
    (TEMPLATES / "_test_only.txt").write_text(
        "Subject: Hello\nFirst line\nsecond <b> {{ subject }}\n\nNext")
    try:
        subject, _text, html = mail.render("_test_only", {"subject": "mine"})
    finally:
        (TEMPLATES / "_test_only.txt").unlink()
    assert subject == "Hello" and "<!doctype html>" in html
    assert "<p>First line<br>second &lt;b&gt; mine</p>" in html and "<p>Next</p>" in html


def test_opted_in_members_get_one_batch_finished_email(app, client, db, worker, owner, session,
                                                       seeded_catalog):
    from tests.factories import add_member, login, post_form
    from tests.lifecycle.helpers import chat_items, quote_and_create
    from tests.lifecycle.support import drive

    add_member(session, owner["workspace_id"], "quiet@example.com", "member")
    login(client)
    post_form(client, "/account/notifications", {"batch_finished": "1"}, page="/account")
    assert "checked" in client.get("/account").get_data(as_text=True)
    _q, batch = quote_and_create(client, owner["secret"], chat_items(2))
    drive(db, worker, batch["id"])
    worker()
    [message] = read(db, lambda s: s.scalars(select(EmailMessage).where(
        EmailMessage.template == "batch_finished")).all())
    assert message.to == "owner@example.com" and batch["id"] in message.subject
    assert f"/batches/{batch['id']}" in message.text and "completed" in message.text
