"""Records (SPEC §10): API events, rate-limit hits, the audit log, support messages, error
references, and the retention purge with its record."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from batchrouter import apievents, retention, scheduler
from batchrouter.db import utcnow
from batchrouter.models import (
    AnalyticsPageView,
    ApiEvent,
    EmailMessage,
    ErrorReport,
    IdempotencyRecord,
    PeriodicTask,
    RateLimitHit,
    RetentionRun,
    SecurityEvent,
    SupportMessage,
)
from tests.factories import bearer, get_csrf, login, make_key, make_user, read

pytestmark = pytest.mark.pg


def html(response) -> str:
    return response.get_data(as_text=True)


def count(db, model) -> int:
    return read(db, lambda s: s.scalar(select(func.count()).select_from(model)))


def test_api_calls_are_recorded_without_secrets(client, session, db, redis, worker):
    user = make_user(session)
    key, secret = make_key(session, user)
    assert client.get("/v1/auth/account", headers=bearer(secret)).status_code == 200
    assert client.get("/v1/batches/bat_nope", headers=bearer(secret)).status_code == 404
    worker()  # the periodic flush moves the buffered events into the database
    events = read(db, lambda s: s.scalars(select(ApiEvent).order_by(ApiEvent.id)).all())
    assert [(e.method, e.path, e.status) for e in events] == [
        ("GET", "/v1/auth/account", 200), ("GET", "/v1/batches/bat_nope", 404)]
    assert all(e.key_id == key.id and e.workspace_id == key.workspace_id for e in events)
    assert all(e.latency_ms >= 0 and e.request_id for e in events)
    assert secret not in repr([vars(e) for e in events])


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_API_LIMIT_KEY": "2 per minute"}],
                         indirect=True)
def test_rate_limit_hits_are_recorded_and_shown(client, session, db):
    user = make_user(session, operator=True)
    key, secret = make_key(session, user)
    statuses = [client.get("/v1/auth/account", headers=bearer(secret)).status_code
                for _ in range(3)]
    assert statuses == [200, 200, 429]
    login(client)
    page = html(client.get("/operator/api-events"))  # the page flushes the buffer first
    assert count(db, RateLimitHit) == 1 and count(db, ApiEvent) == 3
    assert 'data-testid="rate-limit-hits"' in page and key.id in page
    assert "/v1/auth/account" in html(client.get("/operator/api-events?status=429"))


def test_flush_is_exactly_once(session, db, redis):
    for i in range(5):
        apievents.buffer(redis, {"kind": "api", "method": "GET", "path": f"/v1/x{i}",
                                 "status": 200, "latency_ms": 1,
                                 "created_at": utcnow().isoformat()})
    with db.session() as s:
        assert apievents.flush(s, redis) == 5
    with db.session() as s:
        assert apievents.flush(s, redis) == 0
    assert count(db, ApiEvent) == 5


def test_audit_log_filters(client, session, db):
    make_user(session, "op@example.com", operator=True)
    other = make_user(session, "other@example.com")
    with db.session() as s:
        s.add(SecurityEvent(kind="api_key_created", user_id=other.id, workspace_id="org_a",
                            created_at=datetime(2026, 1, 5)))
        s.add(SecurityEvent(kind="member_removed", user_id=other.id, workspace_id="org_b",
                            created_at=datetime(2026, 2, 5)))
    login(client, "op@example.com")
    page = html(client.get("/operator/audit?user=other@example.com&action=api_key_created"))
    assert "org_a" in page and "org_b" not in page
    page = html(client.get("/operator/audit?workspace=org_b"))
    assert "org_b" in page and "org_a" not in page
    page = html(client.get("/operator/audit?since=2026-02-01T00:00&until=2026-03-01T00:00"))
    assert "org_b" in page and "org_a" not in page
    assert client.get("/operator/audit?since=garbage").status_code == 200
    assert "login_succeeded" in html(client.get("/operator/audit?user=op@example.com"))


def test_support_form_records_the_message_for_operators(client, session, db):
    make_user(session, "op@example.com", operator=True)
    page = html(client.get("/support?batch_id=bat_123&ref=err_456"))
    assert 'value="bat_123"' in page and 'value="err_456"' in page
    token = get_csrf(client, "/support")
    response = client.post("/support", data={
        "csrf_token": token, "email": "someone@example.com", "workspace": "Acme",
        "batch_id": "bat_123", "error_reference": "err_456", "subject": "Stuck batch",
        "message": "It has not moved for an hour."})
    assert response.status_code == 200 and "Message sent" in html(response)
    assert count(db, SupportMessage) == 1
    assert read(db, lambda s: s.scalars(select(EmailMessage.to)).all()) == [
        "operator@batchrouter.local"]
    bad = client.post("/support", data={"csrf_token": token, "email": "someone@example.com",
                                        "subject": "", "message": ""})
    assert bad.status_code == 422
    login(client, "op@example.com")
    found = html(client.get("/operator/support?q=err_456"))
    assert "Stuck batch" in found and "someone@example.com" in found


def test_retention_purges_what_expired_and_records_it(client, session, db, app):
    make_user(session, "op@example.com", operator=True)
    old, new = utcnow() - timedelta(days=400), utcnow()
    with db.session() as s:
        s.add_all([SecurityEvent(kind="login_failed", created_at=old),
                   SecurityEvent(kind="login_failed", created_at=new),
                   ApiEvent(method="GET", path="/v1/x", status=200, latency_ms=1,
                            created_at=old),
                   AnalyticsPageView(day=old.date(), route="/", visitor_id="vis_a", views=1),
                   AnalyticsPageView(day=new.date(), route="/", visitor_id="vis_a", views=1),
                   EmailMessage(to="a@example.com", subject="s", text="t", html="h",
                                template="x", idempotency_key="k", status="outbox",
                                created_at=old)])
    before = count(db, SecurityEvent)
    with db.session() as s:
        run = retention.purge(s, retention.policy_from(app.config), app.extensions[
            "batchrouter"].storage)
    assert run.removed["security_log"] == 1 and run.removed["api_events"] == 1
    assert run.removed["analytics"] == 1 and run.removed["emails"] == 1
    assert count(db, SecurityEvent) == before - 1 and count(db, AnalyticsPageView) == 1
    login(client, "op@example.com")
    page = html(client.get("/operator/retention"))
    assert "security log 1" in page and "365 days" in page


def test_retention_and_idempotency_purge_are_scheduled(db, worker):
    with db.session() as s:
        s.add(IdempotencyRecord(key="old", workspace_id="org_x", method="POST", path="/v1/x",
                                request_hash="h", status=200,
                                created_at=utcnow() - timedelta(days=3)))
        s.add(IdempotencyRecord(key="new", workspace_id="org_x", method="POST", path="/v1/x",
                                request_hash="h", status=200))
    worker()  # the first tick claims every due periodic task
    names = read(db, lambda s: set(s.scalars(select(PeriodicTask.name))))
    assert {"retention", "idempotency-purge", "records-flush"} <= names
    assert count(db, RetentionRun) == 1
    assert read(db, lambda s: s.scalars(select(IdempotencyRecord.key)).all()) == ["new"]
    assert scheduler.PERIODIC["idempotency-purge"][0] == "jobs.privacy.purge_idempotency"


def test_error_references_are_searchable_by_operators(client, session, db):
    make_user(session, "op@example.com", operator=True)
    with db.session() as s:
        s.add(ErrorReport(id="err_one", method="GET", path="/v1/batches", status=500,
                          exception="RuntimeError: boom", traceback="tb"))
        s.add(ErrorReport(id="err_two", method="GET", path="/batches/new", status=500,
                          exception="KeyError", traceback="tb"))
    login(client, "op@example.com")
    page = html(client.get("/operator/errors"))
    assert "err_one" in page and "err_two" in page
    page = html(client.get("/operator/errors?path=/v1/"))
    assert "err_one" in page and "err_two" not in page
    assert "RuntimeError: boom" in html(client.get("/operator/errors?ref=err_one"))
