"""POST /v1/auth/agent-register (SPEC §6): one unauthenticated call creates a workspace, its
owner and an owner key; rate limited per IP; test-mode keys until the email is verified."""
from __future__ import annotations

import re

import pytest

from tests.factories import PASSWORD, bearer, get_csrf, login
from tests.teams.helpers import assert_error, emails, events, user_by_email

REGISTER = "/v1/auth/agent-register"
TEST_KEY = re.compile(r"^br_test_[0-9A-Za-z]{49}$")


def test_register_with_nothing_but_a_name(client, db):
    response = client.post(REGISTER, json={"agent_name": "nightly-eval-bot"})
    assert response.status_code == 201, response.json
    body = response.json
    assert body["object"] == "agent_registration"
    assert body["org_id"].startswith("org_") and body["user_id"].startswith("usr_")
    assert body["key_id"].startswith("key_")
    assert TEST_KEY.match(body["api_key"])
    assert body["mode"] == "test"
    assert body["scopes"] == ["admin", "billing", "cancel", "quote", "read", "submit"]
    assert body["workspace"] == {"id": body["org_id"], "name": "nightly-eval-bot"}
    assert body["email"] is None and body["email_verification"] == "not_requested"
    assert "no-store" in response.headers["Cache-Control"]

    account = client.get("/v1/auth/account", headers=bearer(body["api_key"]))
    assert account.status_code == 200
    assert account.json["role"] == "owner" and account.json["mode"] == "test"
    assert account.json["workspace"]["id"] == body["org_id"]
    placeholder = account.json["user"]["email"]
    assert placeholder == f"agent-{body['user_id'].removeprefix('usr_')}@agents.invalid"
    assert account.json["credit_balance"] == "5.000000"  # starter credits, like a sign-up
    assert emails(db) == []  # nothing is ever sent to the placeholder
    [event] = events(db, "agent_registered", body["org_id"])
    assert event.details["key_id"] == body["key_id"] and "api_key" not in str(event.details)


def test_register_with_no_body_at_all(client):
    response = client.post(REGISTER)
    assert response.status_code == 201
    assert response.json["workspace"]["name"] == "Agent workspace"
    assert TEST_KEY.match(response.json["api_key"])


def test_the_placeholder_identity_cannot_sign_in_or_receive_mail(app, client, db):
    body = client.post(REGISTER, json={}).json
    placeholder = client.get("/v1/auth/account",
                             headers=bearer(body["api_key"])).json["user"]["email"]
    browser = app.test_client()
    refused = browser.post("/login", data={"email": placeholder, "password": "",
                                           "csrf_token": get_csrf(browser)})
    assert refused.status_code == 401
    browser.post("/forgot-password", data={"email": placeholder,
                                           "csrf_token": get_csrf(browser, "/forgot-password")})
    assert emails(db) == []


def test_register_with_email_sends_verification_and_stays_in_test_mode(app, client, db):
    response = client.post(REGISTER, json={"agent_name": "Ada", "email": "Ada@Example.com",
                                           "password": PASSWORD})
    assert response.status_code == 201
    body = response.json
    assert body["email"] == "ada@example.com" and body["email_verification"] == "sent"
    assert TEST_KEY.match(body["api_key"]) and body["mode"] == "test"
    [verify] = emails(db, template="verify_email")
    assert verify.to == "ada@example.com"

    # The test key cannot mint a live key, and neither can the unverified owner in the console.
    live = client.post("/v1/auth/account/api-keys", headers=bearer(body["api_key"]),
                       json={"name": "prod", "mode": "live"})
    assert_error(live, 422, "invalid_mode")
    console = app.test_client()
    login(console, "ada@example.com")
    token = get_csrf(console, "/api-keys")
    refused = console.post("/v1/auth/account/api-keys", json={"name": "prod", "mode": "live"},
                           headers={"X-CSRFToken": token})
    assert_error(refused, 403, "email_unverified")

    # Opening the emailed link lifts the restriction.
    link = re.search(r"https?://[^/\s]+(/verify-email/\S+)", verify.text).group(1)
    assert console.get(link).status_code in (302, 303)
    created = console.post("/v1/auth/account/api-keys", json={"name": "prod", "mode": "live"},
                           headers={"X-CSRFToken": token})
    assert created.status_code == 201 and created.json["secret"].startswith("br_live_")
    assert user_by_email(db, "ada@example.com").is_verified


@pytest.mark.parametrize("payload, status, code", [
    ({"password": PASSWORD}, 422, "password_without_email"),
    ({"email": "not-an-email"}, 422, "invalid_email"),
    ({"email": "x@agents.invalid"}, 422, "invalid_email"),
    ({"email": "weak@example.com", "password": "short"}, 422, None),
    ({"agent_name": 42}, 422, "invalid_agent_name"),
])
def test_invalid_registrations_create_nothing(client, db, payload, status, code):
    response = client.post(REGISTER, json=payload)
    assert_error(response, status, code)
    assert events(db, "agent_registered") == [] and events(db, "api_key_created") == []


def test_a_body_that_is_not_a_json_object_is_refused(client):
    response = client.post(REGISTER, data="[1, 2]", content_type="application/json")
    assert_error(response, 400, "invalid_json")


def test_an_email_with_an_account_is_refused(client, session, db):
    from tests.factories import make_user

    make_user(session, "taken@example.com")
    response = client.post(REGISTER, json={"email": "taken@example.com"})
    assert_error(response, 409, "email_taken")
    assert events(db, "agent_registered") == []


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_AGENT_REGISTER_LIMIT": "2 per hour"}],
                         indirect=True)
def test_registration_is_rate_limited_per_ip(app, db):
    client = app.test_client()
    for _ in range(2):
        assert client.post(REGISTER, json={}).status_code == 201
    limited = client.post(REGISTER, json={})
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) > 0
    assert len(events(db, "agent_registered")) == 2
    other_ip = app.test_client()
    response = other_ip.post(REGISTER, json={}, environ_base={"REMOTE_ADDR": "10.9.8.7"})
    assert response.status_code == 201  # the limit is per client IP


def test_registration_needs_no_csrf_and_is_in_the_openapi_document(client):
    assert client.post(REGISTER, json={}).status_code == 201  # no cookie, no CSRF token
    paths = client.get("/openapi.json").json["paths"]
    operation = paths[REGISTER]["post"]
    assert operation["security"] == [{}]
    assert set(operation["responses"]) >= {"201", "409", "422", "429"}
    for path in ("/v1/workspace", "/v1/workspace/members", "/v1/workspace/members/{user_id}",
                 "/v1/workspace/invitations", "/v1/workspace/invitations/{id}",
                 "/v1/workspace/transfer-ownership", "/v1/workspace/security-events"):
        assert path in paths
