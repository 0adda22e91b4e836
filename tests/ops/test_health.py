"""/healthz, /readyz and the operator system page."""
import pytest

from batchrouter import queue
from tests.factories import login, make_user


def test_readyz_needs_a_worker_heartbeat(client, redis):
    body = client.get("/readyz")
    assert body.status_code == 503
    assert body.get_json()["checks"] == {"database": "ok", "migrations": "ok", "redis": "ok",
                                         "workers": 0}
    queue.write_heartbeat(redis, "host.1", 30)
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"


def test_readyz_reports_a_dead_redis(app, client):
    app.extensions["batchrouter"].redis_url = "redis://127.0.0.1:1/0"
    body = client.get("/readyz")
    assert body.status_code == 503
    assert body.get_json()["checks"]["redis"].startswith("fail")


def test_system_page_shows_heartbeats_and_queue_states(client, session, redis):
    make_user(session, "op@example.com", operator=True)
    login(client, "op@example.com")
    queue.write_heartbeat(redis, "box-a.4242", 30)
    queue.enqueue(redis, "jobs.maintenance.sweep_outbox")
    page = client.get("/operator/system").get_data(as_text=True)
    assert "box-a.4242" in page and "s ago" in page
    assert "<th scope=\"col\">Scheduled</th>" in page
    row = page.split("<td><code>default</code></td>", 1)[1].split("</tr>", 1)[0]
    assert row.startswith("<td>1</td>")  # one job waiting


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_endpoints_need_no_login(client, path):
    assert client.get(path).status_code in (200, 503)
    assert client.get(path).is_json


def test_dashboard_spend_chart_writes_nothing(session):
    """Found by the e2e flow under load: the GET dashboard created the workspace's "spent"
    account, a write that SQLite refuses ("database is locked") while a worker writes."""
    from sqlalchemy import func, select

    from batchrouter import ledger
    from batchrouter.models import LedgerAccount
    from tests.factories import workspace_of

    ws = workspace_of(session, make_user(session))
    before = session.scalar(select(func.count()).select_from(LedgerAccount))
    assert sum(amount for _day, amount in ledger.daily_spend(session, ws)) == 0
    assert not session.new and not session.dirty
    assert session.scalar(select(func.count()).select_from(LedgerAccount)) == before
