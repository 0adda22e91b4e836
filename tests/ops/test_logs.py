"""Structured logs: request id and workspace in requests, job and batch ids in jobs."""
import json
import logging

import pytest

from batchrouter import logs
from tests.factories import bearer, make_key, make_user, workspace_of
from tests.lifecycle.helpers import chat_items, quote_and_create


class Capture(logging.Handler):
    """A handler with the app's filter and JSON formatter, as LOG_FORMAT=json installs."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.addFilter(logs.ContextFilter())
        self.setFormatter(logs.JsonFormatter())
        self.lines = []

    def emit(self, record):
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def captured():
    handler = Capture()
    logging.getLogger().addHandler(handler)
    yield handler.lines
    logging.getLogger().removeHandler(handler)


@pytest.fixture
def app_overrides(tmp_path):
    return {"BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage"),
            "BATCHROUTER_SANDBOX_BATCH_DELAY": 0.0, "BATCHROUTER_POLL_INTERVAL": 0.0}


def test_request_lines_carry_the_request_id_and_workspace(client, session, captured):
    user = make_user(session)
    _key, secret = make_key(session, user)
    response = client.get("/v1/batches", headers={**bearer(secret), "X-Request-Id": "abc123DEF456"})
    assert response.headers["X-Request-Id"] == "abc123DEF456"
    access = [line for line in captured if line["logger"] == "batchrouter.access"]
    assert access[-1]["request_id"] == "abc123DEF456"
    assert access[-1]["workspace_id"] == workspace_of(session, user)
    assert access[-1]["route"] == "/v1/batches" and access[-1]["status"] == 200
    assert access[-1]["duration_ms"] >= 0


def test_job_lines_carry_job_batch_and_workspace(client, session, seeded_catalog, worker,
                                                  captured):
    user = make_user(session)
    _key, secret = make_key(session, user)
    _q, batch = quote_and_create(client, secret, chat_items(3))
    captured.clear()
    worker()
    in_batch = [line for line in captured if line.get("batch_id") == batch["id"]]
    assert in_batch, captured[:5]
    assert all(line["job_id"].startswith("obx_") for line in in_batch)
    assert {line["workspace_id"] for line in in_batch} == {workspace_of(session, user)}
    # Context ends with the job: the worker's own shutdown lines carry no job id.
    assert "job_id" not in captured[-1]


def test_text_format_appends_the_context():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.request_id = "r1"
    assert logs.TextFormatter().format(record).endswith("hello [request_id=r1]")


def test_bound_context_nests_and_resets():
    with logs.bound(job_id="j1"):
        logs.bind(batch_id="b1")
        assert logs.current_fields() == {"job_id": "j1", "batch_id": "b1"}
    assert logs.current_fields() == {}
    logs.bind(batch_id="outside")  # no block: ignored, nothing leaks into later lines
    assert logs.current_fields() == {}


def test_error_page_shows_reference_and_request_id(app, client):
    @app.get("/boom-for-test")
    def boom():
        raise RuntimeError("kaboom")

    response = client.get("/boom-for-test", headers={"X-Request-Id": "feedface12345678"})
    page = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "Error reference:" in page and "feedface12345678" in page
    assert response.headers["X-Request-Id"] == "feedface12345678"
