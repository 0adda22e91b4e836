"""The frame around every /v1 call (SPEC §6): the error envelope for every status, 5xx error
references, body size limit, rate limits with Retry-After, /openapi.json, security headers."""
from __future__ import annotations

import json

import pytest

from batchrouter.models import ApiKey, ErrorReport
from tests.factories import add_member, bearer, make_key, make_user, workspace_of

ACCOUNT = "/v1/auth/account"
KEYS = "/v1/auth/account/api-keys"


@pytest.fixture
def app_overrides(request):
    """Per-test configuration through indirect parametrization (default: none)."""
    return getattr(request, "param", {})


@pytest.fixture
def owner(session):
    return make_user(session)


@pytest.fixture
def secret(session, owner):
    return make_key(session, owner)[1]


def assert_error(response, status, code=None):
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json", response.headers.get("Content-Type")
    body = json.loads(response.get_data(as_text=True))
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


# --- 6. Error envelope ------------------------------------------------------------------------

def test_unknown_v1_path_is_json_404(client, secret):
    assert_error(client.get("/v1/nope"), 404, "not_found")
    assert_error(client.get("/v1/nope", headers=bearer(secret)), 404, "not_found")
    assert_error(client.get("/v1"), 404, "not_found")


def test_unknown_console_path_is_an_html_page_not_json(client):
    response = client.get("/definitely-not-a-page")
    assert response.status_code == 404
    assert response.mimetype == "text/html"


def test_wrong_method_is_json_405(client, secret):
    error = assert_error(client.put(ACCOUNT, headers=bearer(secret), json={}), 405,
                         "method_not_allowed")
    assert "Traceback" not in error["message"]


def test_405_names_the_allowed_methods(client, secret):
    response = client.put(ACCOUNT, headers=bearer(secret), json={})
    assert response.status_code == 405
    assert "GET" in response.headers.get("Allow", "")


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_MAX_CONTENT_LENGTH": 1024}],
                         indirect=True)
def test_body_over_max_content_length_is_json_413(client, session, secret, app):
    assert app.config["MAX_CONTENT_LENGTH"] == 1024
    big = json.dumps({"name": "big", "padding": "x" * 4096})
    response = client.post(KEYS, headers=bearer(secret), data=big,
                           content_type="application/json")
    assert_error(response, 413, "payload_too_large")
    session.commit()
    assert session.query(ApiKey).filter_by(name="big").count() == 0
    # A body under the limit still works on the same app.
    small = client.post(KEYS, headers=bearer(secret), json={"name": "small"})
    assert small.status_code == 201, small.get_data(as_text=True)


@pytest.mark.parametrize("data,content_type", [
    ("{not json", "application/json"),
    ('["a", "list"]', "application/json"),
    ("", "application/json"),
    ('{"name": "form"}', "text/plain"),
])
def test_invalid_json_body_is_400_invalid_json(client, secret, data, content_type):
    response = client.post(KEYS, headers=bearer(secret), data=data, content_type=content_type)
    assert_error(response, 400, "invalid_json")


def test_unexpected_error_is_500_with_reference_and_no_traceback(client, session, secret,
                                                                 monkeypatch):
    from batchrouter import ledger

    def explode(*_args, **_kwargs):
        raise RuntimeError("kaboom-internal-detail /srv/secret/path")

    monkeypatch.setattr(ledger, "balances", explode)
    response = client.get(ACCOUNT, headers=bearer(secret))
    error = assert_error(response, 500, "internal_error")
    reference = error["error_reference"]
    assert reference.startswith("err_")
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "kaboom", "RuntimeError", "/srv/secret", ".py", "File \""):
        assert leak not in text, leak
    assert response.headers["Cache-Control"] == "no-store"

    session.commit()
    report = session.get(ErrorReport, reference)
    assert report is not None
    assert report.status == 500
    assert report.method == "GET" and report.path == ACCOUNT
    assert "RuntimeError" in report.exception
    assert "kaboom-internal-detail" in report.traceback
    assert report.request_id == response.headers["X-Request-Id"]


def test_error_in_a_writing_request_is_recorded_without_waiting_on_its_own_lock(
        client, session, secret, monkeypatch):
    """On SQLite a POST holds the write lock from its first statement; the error report is
    written in its own session, so the failed request's transaction must be let go first."""
    from batchrouter import apikeys
    from batchrouter.extensions import db_session
    from batchrouter.models import SecurityEvent

    def write_then_explode(*_args, **_kwargs):
        db_session().add(SecurityEvent(kind="test.half_done", details={}))
        db_session().flush()
        raise RuntimeError("boom after a write")

    monkeypatch.setattr(apikeys, "create_key", write_then_explode)
    response = client.post(KEYS, headers=bearer(secret), json={"name": "x"})
    error = assert_error(response, 500, "internal_error")
    # "req-…" is the fallback used when the report could not be stored.
    assert error["error_reference"].startswith("err_")
    session.commit()
    assert session.get(ErrorReport, error["error_reference"]) is not None
    assert session.query(SecurityEvent).filter_by(kind="test.half_done").count() == 0


# --- 7. Rate limits ------------------------------------------------------------------------

def assert_rate_limited(response):
    assert_error(response, 429, "rate_limited")
    retry = response.headers.get("Retry-After")
    assert retry is not None and retry.isdigit(), retry
    assert 1 <= int(retry) <= 60


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_API_LIMIT_KEY": "3 per minute"}],
                         indirect=True)
def test_per_key_rate_limit(client, session, owner, secret):
    for _ in range(3):
        assert client.get(ACCOUNT, headers=bearer(secret)).status_code == 200
    assert_rate_limited(client.get(ACCOUNT, headers=bearer(secret)))
    # Any endpoint, same key: still limited.
    assert_rate_limited(client.get(KEYS, headers=bearer(secret)))
    # Another key in the same workspace has its own budget.
    _key, second = make_key(session, owner)
    for _ in range(3):
        assert client.get(ACCOUNT, headers=bearer(second)).status_code == 200
    assert_rate_limited(client.get(ACCOUNT, headers=bearer(second)))


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_API_LIMIT_WORKSPACE": "3 per minute"}],
                         indirect=True)
def test_workspace_rate_limit_is_shared_by_its_keys(client, session, owner):
    _k1, first = make_key(session, owner)
    _k2, second = make_key(session, owner)
    assert client.get(ACCOUNT, headers=bearer(first)).status_code == 200
    assert client.get(ACCOUNT, headers=bearer(first)).status_code == 200
    assert client.get(ACCOUNT, headers=bearer(second)).status_code == 200
    assert_rate_limited(client.get(ACCOUNT, headers=bearer(second)))
    assert_rate_limited(client.get(ACCOUNT, headers=bearer(first)))
    # Another workspace is unaffected.
    other = make_user(session, "other@example.com")
    _k3, third = make_key(session, other)
    assert client.get(ACCOUNT, headers=bearer(third)).status_code == 200


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_API_LIMIT_WORKSPACE": "3 per minute"}],
                         indirect=True)
def test_workspace_rate_limit_covers_member_keys(client, session, owner):
    member = add_member(session, workspace_of(session, owner), "member@example.com", "member")
    _k1, first = make_key(session, owner)
    _k2, second = make_key(session, member)
    for secret in (first, first, second):
        assert client.get(ACCOUNT, headers=bearer(secret)).status_code == 200
    assert_rate_limited(client.get(ACCOUNT, headers=bearer(second)))


# --- 8. OpenAPI -----------------------------------------------------------------------------

def test_openapi_document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    doc = json.loads(response.get_data(as_text=True))
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    paths = doc["paths"]
    assert "get" in paths["/v1/auth/account"]
    assert {"get", "post"} <= set(paths["/v1/auth/account/api-keys"])
    assert "delete" in paths["/v1/auth/account/api-keys/{id}"]
    assert doc["servers"][0]["url"] == "http://127.0.0.1:5000"
    # Every $ref points at something the document defines.
    refs = []

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        target = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]


# --- 9. Security headers --------------------------------------------------------------------

def assert_api_headers(response):
    assert response.headers.get("Cache-Control") == "no-store"
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert response.headers.get("X-Request-Id")


def test_security_headers_on_json_responses(client, secret):
    ok = client.get(ACCOUNT, headers=bearer(secret))
    assert ok.status_code == 200
    assert_api_headers(ok)
    created = client.post(KEYS, headers=bearer(secret), json={"name": "hdr"})
    assert created.status_code == 201
    assert_api_headers(created)
    for response in (client.get(ACCOUNT), client.get("/v1/nope"),
                     client.put(ACCOUNT, headers=bearer(secret))):
        assert response.status_code >= 400
        assert_api_headers(response)
    # Each response gets its own id.
    assert ok.headers["X-Request-Id"] != created.headers["X-Request-Id"]


def test_request_id_is_echoed_when_well_formed(client, secret):
    response = client.get(ACCOUNT, headers={**bearer(secret), "X-Request-Id": "abcDEF123456"})
    assert response.headers["X-Request-Id"] == "abcDEF123456"
    for hostile in ("<script>alert(1)</script>", "a" * 200, "short"):
        echoed = client.get(ACCOUNT, headers={**bearer(secret), "X-Request-Id": hostile})
        assert echoed.status_code == 200
        assert echoed.headers["X-Request-Id"] != hostile
        assert echoed.headers["X-Request-Id"].isalnum()
