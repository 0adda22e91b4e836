"""/metrics: who may read it, what it says after real traffic and a real batch run."""
import os
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batchrouter import metrics
from tests.factories import bearer, login, make_key, make_user
from tests.lifecycle.helpers import chat_items, quote_and_create

TOKEN = "metrics-token-for-tests"


@pytest.fixture
def app_overrides(tmp_path):
    return {"BATCHROUTER_METRICS_TOKEN": TOKEN,
            "BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage"),
            "BATCHROUTER_SANDBOX_BATCH_DELAY": 0.0, "BATCHROUTER_POLL_INTERVAL": 0.0}


def scrape(client) -> dict:
    """{(name, frozenset(labels)): value} of every sample /metrics returns."""
    response = client.get("/metrics", headers=bearer(TOKEN))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_needs_the_token_or_an_operator(client, session):
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.get_json()["error"]["code"] == "unauthorized"
    assert client.get("/metrics", headers=bearer("wrong")).status_code == 401
    make_user(session, "user@example.com")
    login(client, "user@example.com")
    assert client.get("/metrics").status_code == 401  # a customer is not an operator
    other = client.application.test_client()
    make_user(session, "op@example.com", operator=True)
    login(other, "op@example.com")
    assert other.get("/metrics").status_code == 200


@pytest.mark.parametrize("app_overrides", [{}], indirect=True)
def test_without_a_token_only_operators_read_metrics(client):
    assert client.get("/metrics", headers=bearer("anything")).status_code == 401


def test_http_requests_are_counted_by_route_and_status(client, session):
    _key, secret = make_key(session, make_user(session))
    before = scrape(client)
    for _ in range(3):
        assert client.get("/v1/batches/bat_missing", headers=bearer(secret)).status_code == 404
    client.get("/no/such/page")
    after = scrape(client)
    labels = {"method": "GET", "route": "/v1/batches/<batch_id>", "status": "404"}
    assert value(after, "batchrouter_http_requests_total", **labels) \
        - value(before, "batchrouter_http_requests_total", **labels) == 3
    route = {"method": "GET", "route": "/v1/batches/<batch_id>"}
    assert value(after, "batchrouter_http_request_duration_seconds_count", **route) \
        - value(before, "batchrouter_http_request_duration_seconds_count", **route) == 3
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, "batchrouter_http_requests_total", **unmatched) \
        > value(before, "batchrouter_http_requests_total", **unmatched)
    assert ("batchrouter_http_requests_total",
            frozenset({"method": "GET", "route": "/no/such/page", "status": "404"}.items())) \
        not in after  # raw paths never become labels


def test_a_batch_run_shows_in_state_provider_and_job_metrics(client, session, seeded_catalog,
                                                            worker):
    _key, secret = make_key(session, make_user(session))
    before = scrape(client)
    _quote, batch = quote_and_create(client, secret, chat_items(30))
    queued = scrape(client)
    assert value(queued, "batchrouter_batches", status="queued") == 1
    assert value(queued, "batchrouter_items", status="pending") == 30
    assert value(queued, "batchrouter_queue_depth", queue="default", state="queued") >= 1
    assert value(queued, "batchrouter_ledger_balance_micros", kind="reserved") > 0
    worker()
    body = client.get(f"/v1/batches/{batch['id']}", headers=bearer(secret)).get_json()
    assert body["status"] == "completed"
    after = scrape(client)
    assert value(after, "batchrouter_batches", status="completed") == 1
    assert value(after, "batchrouter_items", status="succeeded") == 30
    assert value(after, "batchrouter_items", status="pending") == 0
    assert value(after, "batchrouter_queue_depth", queue="default", state="queued") == 0
    assert value(after, "batchrouter_ledger_balance_micros", kind="reserved") == 0
    settled = int(body["cost_usd"]["settled"].replace(".", ""))
    assert value(after, "batchrouter_settled_micros", part="total") == settled
    assert value(after, "batchrouter_ledger_balance_micros", kind="spent") == settled
    lane = "sandbox/sandbox-chat/batch"  # the cheapest lane: one submit, then polls
    calls = value(after, "batchrouter_provider_calls_total", lane=lane, outcome="ok") \
        - value(before, "batchrouter_provider_calls_total", lane=lane, outcome="ok")
    assert calls >= 2
    assert value(after, "batchrouter_provider_call_duration_seconds_count", lane=lane) \
        - value(before, "batchrouter_provider_call_duration_seconds_count", lane=lane) == calls
    jobs = value(after, "batchrouter_jobs_total", queue="default", outcome="succeeded") \
        - value(before, "batchrouter_jobs_total", queue="default", outcome="succeeded")
    assert jobs >= 2  # at least the work unit and the finalize job
    assert value(after, "batchrouter_scrape_error", source="database") == 0
    assert value(after, "batchrouter_scrape_error", source="redis") == 0


def test_sync_results_count_one_call_per_item_with_its_error_code(client):
    from batchrouter.providers.base import ItemResult, error

    lane = "sandbox/metrics-test/sync"
    failed = ItemResult("it_2", False, latency_ms=40,
                        error=error("rate_limited", "slow down", retryable=True))
    metrics.provider_results(lane, [ItemResult("it_1", True, latency_ms=20), failed])
    with pytest.raises(TimeoutError), metrics.timed_provider_call(lane):
        raise TimeoutError
    samples = scrape(client)
    for outcome in ("ok", "rate_limited", "exception"):
        assert value(samples, "batchrouter_provider_calls_total", lane=lane,
                     outcome=outcome) == 1
    assert value(samples, "batchrouter_provider_call_duration_seconds_sum", lane=lane) >= 0.06


def test_breaker_and_webhook_metrics_from_the_helpers(client):
    metrics.breaker_state("sandbox/x/sync", "open")
    metrics.webhook_delivery("delivered")
    samples = scrape(client)
    assert value(samples, "batchrouter_breaker_state", lane="sandbox/x/sync", state="open") == 1
    assert value(samples, "batchrouter_breaker_state", lane="sandbox/x/sync", state="closed") == 0
    metrics.breaker_state("sandbox/x/sync", "closed")
    samples = scrape(client)
    assert value(samples, "batchrouter_breaker_state", lane="sandbox/x/sync", state="open") == 0
    assert value(samples, "batchrouter_breaker_state", lane="sandbox/x/sync", state="closed") == 1
    assert value(samples, "batchrouter_webhook_deliveries_total", outcome="delivered") >= 1
    with pytest.raises(ValueError):
        metrics.breaker_state("sandbox/x/sync", "melted")


def test_a_broken_redis_is_reported_not_raised(app, client):
    app.extensions["batchrouter"].redis_url = "redis://127.0.0.1:1/0"
    samples = scrape(client)
    assert value(samples, "batchrouter_scrape_error", source="redis") == 1
    assert value(samples, "batchrouter_scrape_error", source="database") == 0


WRITER = """
from batchrouter import metrics
metrics.provider_call("lane/a/sync", "ok", 0.02)
metrics.job_outcome("default", "succeeded", 0.1)
metrics.breaker_state("lane/a/sync", "{state}")
"""


def test_multiprocess_mode_sums_every_process(tmp_path):
    """Two processes write into one PROMETHEUS_MULTIPROC_DIR; a third renders their sum."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for state in ("open", "half_open"):
        subprocess.run([sys.executable, "-c", WRITER.format(state=state)], env=env, check=True)
    out = subprocess.run([sys.executable, "-c",
                          ("import sys; from batchrouter import metrics; "
                           "sys.stdout.write(metrics.render().decode())")],
                         env=env, check=True, capture_output=True, text=True).stdout
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for f in text_string_to_metric_families(out) for s in f.samples}
    assert value(samples, "batchrouter_provider_calls_total", lane="lane/a/sync",
                 outcome="ok") == 2
    assert value(samples, "batchrouter_jobs_total", queue="default", outcome="succeeded") == 2
    # The most recent write wins for the breaker gauge.
    assert value(samples, "batchrouter_breaker_state", lane="lane/a/sync", state="half_open") == 1
    assert value(samples, "batchrouter_breaker_state", lane="lane/a/sync", state="open") == 0


def test_flask_metrics_serves_every_process_on_an_internal_address(app, tmp_path, redis):
    """`flask metrics --bind` sums the processes writing to PROMETHEUS_MULTIPROC_DIR and adds
    the database/Redis state, with no token (it listens on an internal address only)."""
    import requests as http

    from tests.conftest import free_port, subprocess_env, wait_for

    env = {**subprocess_env(app), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", WRITER.format(state="open")], env=env, check=True)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "metrics", "--bind",
                             f"127.0.0.1:{port}"], cwd=os.path.dirname(os.path.dirname(
                                 os.path.dirname(__file__))), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def fetch():
            try:
                return http.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            except http.RequestException:  # not listening yet, or slow on a busy machine
                return None
        text = wait_for(fetch, timeout=20)
    finally:
        proc.terminate()
        proc.wait(10)
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert value(samples, "batchrouter_provider_calls_total", lane="lane/a/sync",
                 outcome="ok") == 1
    assert value(samples, "batchrouter_scrape_error", source="database") == 0
    assert ("batchrouter_workers_live", frozenset()) in samples
