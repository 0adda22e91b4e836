"""Email goes out through the resend SDK to a loopback Resend stub, from a real RQ worker."""
import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select

from batchrouter import accounts
from batchrouter.models import EmailMessage
from tests.factories import PASSWORD, SETTINGS, read
from tests.stubs import StubServer

CLIENT = accounts.Client(ip="127.0.0.1")


@pytest.fixture
def resend_stub():
    stub = StubServer()
    stub.route("POST", "/emails", lambda req: (200, {"id": f"re_{len(stub.requests)}"}))
    stub.start()
    yield stub
    stub.stop()


@pytest.fixture
def app_overrides(resend_stub):
    return {"RESEND_API_KEY": "re_test_key", "RESEND_API_URL": resend_stub.url,
            "EMAIL_FROM": "BatchRouter <noreply@example.com>"}


def messages(db):
    return read(db, lambda s: s.scalars(select(EmailMessage)).all())


def test_signup_email_is_sent_by_the_worker_through_resend(app, db, worker, resend_stub):
    with db.session() as s:
        accounts.sign_up(s, "new@example.com", PASSWORD, SETTINGS, CLIENT)
    assert resend_stub.requests == []  # nothing is sent inside the request
    worker()
    [sent] = resend_stub.received("POST", "/emails")
    assert sent.headers["authorization"] == "Bearer re_test_key"
    assert sent.json["to"] == ["new@example.com"]
    assert sent.json["from"] == "BatchRouter <noreply@example.com>"
    assert "/verify-email/" in sent.json["text"]
    assert sent.headers["idempotency-key"].startswith("verify-email/")
    [message] = messages(db)
    assert message.status == "sent" and message.provider_id == "re_1"


def test_running_the_job_twice_sends_once(app, db, worker, resend_stub):
    from jobs import email as email_job
    from jobs import runtime

    with db.session() as s:
        accounts.sign_up(s, "twice@example.com", PASSWORD, SETTINGS, CLIENT)
    worker()
    runtime.install(app)
    email_job.send_email(messages(db)[0].id)
    assert len(resend_stub.received("POST", "/emails")) == 1


def test_provider_outage_is_retried_with_the_same_idempotency_key(app, db, redis, worker,
                                                                   resend_stub):
    resend_stub.route("POST", "/emails", [
        lambda req: (503, {"name": "application_error", "message": "down", "statusCode": 503}),
        lambda req: (200, {"id": "re_ok"}),
    ])
    with db.session() as s:
        accounts.sign_up(s, "retry@example.com", PASSWORD, SETTINGS, CLIENT)
    worker()
    [message] = messages(db)
    assert message.status == "queued" and message.attempts == 1 and message.last_error
    registry = ScheduledJobRegistry("default", connection=redis)
    [job_id] = registry.get_job_ids()  # RQ scheduled the retry with backoff
    # Fast-forward the backoff: move the scheduled retry to the queue now.
    Queue("default", connection=redis).enqueue_job(registry.get_queue().fetch_job(job_id))
    registry.remove(job_id)
    worker()
    [message] = messages(db)
    assert message.status == "sent" and message.provider_id == "re_ok"
    first, second = resend_stub.received("POST", "/emails")
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]


def test_permanent_refusal_is_not_retried(app, db, redis, worker, resend_stub):
    resend_stub.route("POST", "/emails", lambda req: (
        422, {"name": "validation_error", "message": "bad from", "statusCode": 422}))
    with db.session() as s:
        accounts.sign_up(s, "bad@example.com", PASSWORD, SETTINGS, CLIENT)
    worker()
    [message] = messages(db)
    assert message.status == "failed" and "bad from" in message.last_error
    assert ScheduledJobRegistry("default", connection=redis).get_job_ids() == []


class TestWithoutResend:
    @pytest.fixture
    def app_overrides(self):
        return {}

    def test_messages_land_in_the_local_outbox(self, app, db, worker):
        with db.session() as s:
            accounts.sign_up(s, "local@example.com", PASSWORD, SETTINGS, CLIENT)
        worker()
        [message] = messages(db)
        assert message.status == "outbox" and message.sent_at is not None
