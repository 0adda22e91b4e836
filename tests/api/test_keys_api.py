"""/v1/auth/account and /v1/auth/account/api-keys as a client sees them (SPEC §2, §6):
authentication by Bearer key or console session, key CRUD, scopes and roles, CSRF for cookie
sessions, Idempotency-Key replay."""
from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from batchrouter import apikeys
from batchrouter.db import utcnow
from batchrouter.errors import Forbidden
from batchrouter.models import ApiKey, Membership
from tests.factories import add_member, bearer, get_csrf, login, make_key, make_user, workspace_of

KEYS = "/v1/auth/account/api-keys"
ACCOUNT = "/v1/auth/account"
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def assert_error(response, status, code=None):
    """The SPEC §6 envelope: {"error": {"code", "message"}} with the right status."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.is_json, response.headers.get("Content-Type")
    error = response.json["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def key_rows(session, **where):
    session.commit()  # end any open read transaction: see what the app committed since
    stmt = select(ApiKey)
    for name, value in where.items():
        stmt = stmt.where(getattr(ApiKey, name) == value)
    return list(session.scalars(stmt))


@pytest.fixture
def owner(session):
    return make_user(session)


@pytest.fixture
def owner_secret(session, owner):
    return make_key(session, owner)[1]


# --- 1. GET /v1/auth/account ---------------------------------------------------------------

def test_account_with_bearer_key(client, session, owner):
    key, secret = make_key(session, owner)
    response = client.get(ACCOUNT, headers=bearer(secret))
    assert response.status_code == 200
    body = response.json
    assert body["object"] == "account"
    assert body["user"]["id"] == owner.id
    assert body["user"]["email"] == "owner@example.com"
    assert body["workspace"]["id"] == workspace_of(session, owner)
    assert body["workspace"]["id"].startswith("org_")
    assert body["role"] == "owner"
    assert body["mode"] == "live"
    assert body["api_key"] == {"id": key.id, "name": "test key"}
    assert body["credit_balance"] == "5.000000"
    assert body["reserved"] == "0.000000"


def test_account_without_key_is_401_envelope(client, owner):
    error = assert_error(client.get(ACCOUNT), 401)
    assert error["code"] == "missing_api_key"


@pytest.mark.parametrize("header", ["Bearer br_live_abc", "Bearer br_live_", "Bearer sk-abc",
                                    "Bearer br_prod_" + "A" * 49])
def test_malformed_key_is_401_invalid_api_key(client, owner, header):
    assert_error(client.get(ACCOUNT, headers={"Authorization": header}), 401, "invalid_api_key")


def test_wrong_checksum_is_rejected_without_touching_api_keys(client, db, session, owner):
    _key, secret = make_key(session, owner)
    last = secret[-1]
    forged = secret[:-1] + (B62[(B62.index(last) + 1) % len(B62)])
    assert forged != secret and not apikeys.well_formed(forged)

    statements = []

    def record(_conn, _cursor, statement, *_args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        response = client.get(ACCOUNT, headers=bearer(forged))
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert_error(response, 401, "invalid_api_key")
    assert not [s for s in statements if "api_keys" in s], statements


def test_unknown_but_well_formed_key_is_401(client, owner):
    secret = apikeys.generate_secret("live")  # valid checksum, never stored
    assert_error(client.get(ACCOUNT, headers=bearer(secret)), 401, "invalid_api_key")


def test_test_mode_key_reports_mode_test(client, session, owner):
    _key, secret = make_key(session, owner, mode="test")
    assert secret.startswith("br_test_")
    response = client.get(ACCOUNT, headers=bearer(secret))
    assert response.status_code == 200
    assert response.json["mode"] == "test"


# --- 2. API keys CRUD ------------------------------------------------------------------------

def test_create_key_returns_secret_once(client, session, owner, owner_secret):
    response = client.post(KEYS, headers=bearer(owner_secret),
                           json={"name": "ci", "scopes": ["read", "quote"],
                                 "expires_at": "2099-01-01T00:00:00Z"})
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.json
    secret = body["secret"]
    assert secret.startswith("br_live_") and apikeys.well_formed(secret)
    assert body["id"].startswith("key_")
    assert body["object"] == "api_key"
    assert body["name"] == "ci"
    assert body["mode"] == "live"
    assert sorted(body["scopes"]) == ["quote", "read"]
    assert body["expires_at"] == "2099-01-01T00:00:00Z"
    assert body["revoked"] is False
    assert body["prefix"] == secret[:8] == "br_live_"
    assert body["last4"] == secret[-4:]
    assert body["display"] == f"{secret[:8]}…{secret[-4:]}"
    assert secret not in body["display"]

    # The secret works, with exactly the scopes asked for.
    account = client.get(ACCOUNT, headers=bearer(secret))
    assert account.status_code == 200
    assert account.json["scopes"] == ["quote", "read"]

    # Not in the list, ever.
    listing = client.get(KEYS, headers=bearer(owner_secret))
    assert listing.status_code == 200
    assert secret not in listing.get_data(as_text=True)
    assert owner_secret not in listing.get_data(as_text=True)
    listed = {k["id"]: k for k in listing.json["data"]}
    assert body["id"] in listed
    assert "secret" not in listed[body["id"]]
    assert listed[body["id"]]["display"] == body["display"]

    # Stored as a hash, never as the secret.
    (row,) = key_rows(session, id=body["id"])
    assert row.secret_hash != secret
    assert secret not in row.secret_hash
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in (row.prefix + row.last4 + row.name)


def test_create_key_validation(client, owner, owner_secret):
    assert_error(client.post(KEYS, headers=bearer(owner_secret), json={"scopes": ["read"]}),
                 422, "invalid_name")
    assert_error(client.post(KEYS, headers=bearer(owner_secret),
                             json={"name": "x", "scopes": ["root"]}), 422, "invalid_scopes")
    assert_error(client.post(KEYS, headers=bearer(owner_secret),
                             json={"name": "x", "scopes": "read"}), 422, "invalid_scopes")
    assert_error(client.post(KEYS, headers=bearer(owner_secret),
                             json={"name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
                 422, "invalid_expiry")
    assert_error(client.post(KEYS, headers=bearer(owner_secret),
                             json={"name": "x", "expires_at": "next tuesday"}),
                 422, "invalid_expiry")


def test_test_key_cannot_create_live_key(client, session, owner):
    _key, test_secret = make_key(session, owner, mode="test")
    assert_error(client.post(KEYS, headers=bearer(test_secret), json={"name": "x", "mode": "live"}),
                 422, "invalid_mode")
    response = client.post(KEYS, headers=bearer(test_secret), json={"name": "x"})
    assert response.status_code == 201
    assert response.json["secret"].startswith("br_test_")
    assert response.json["mode"] == "test"


def test_revoked_key_is_refused_on_the_next_request(client, session, owner, owner_secret):
    created = client.post(KEYS, headers=bearer(owner_secret), json={"name": "doomed"}).json
    secret = created["secret"]
    assert client.get(ACCOUNT, headers=bearer(secret)).status_code == 200

    response = client.delete(f"{KEYS}/{created['id']}", headers=bearer(owner_secret))
    assert response.status_code == 200
    assert response.json["id"] == created["id"]
    assert response.json["revoked"] is True
    assert "secret" not in response.json

    assert_error(client.get(ACCOUNT, headers=bearer(secret)), 401, "invalid_api_key")
    listed = [k["id"] for k in client.get(KEYS, headers=bearer(owner_secret)).json["data"]]
    assert created["id"] not in listed
    # Revoking again is harmless; the revoking key itself still works.
    assert client.delete(f"{KEYS}/{created['id']}", headers=bearer(owner_secret)).status_code == 200
    assert client.get(ACCOUNT, headers=bearer(owner_secret)).status_code == 200


def test_a_key_can_revoke_itself(client, session, owner):
    key, secret = make_key(session, owner)
    assert client.delete(f"{KEYS}/{key.id}", headers=bearer(secret)).status_code == 200
    assert_error(client.get(ACCOUNT, headers=bearer(secret)), 401, "invalid_api_key")


def test_revoking_another_workspaces_key_is_404(client, session, owner, owner_secret):
    other = make_user(session, "other@example.com")
    other_key, other_secret = make_key(session, other)
    assert workspace_of(session, other) != workspace_of(session, owner)

    assert_error(client.delete(f"{KEYS}/{other_key.id}", headers=bearer(owner_secret)),
                 404, "not_found")
    assert_error(client.delete(f"{KEYS}/key_doesnotexist", headers=bearer(owner_secret)),
                 404, "not_found")
    # Untouched: the victim's key still works and is not revoked.
    assert client.get(ACCOUNT, headers=bearer(other_secret)).status_code == 200
    (row,) = key_rows(session, id=other_key.id)
    assert row.revoked_at is None
    # And it is not visible in the attacker's list.
    listed = [k["id"] for k in client.get(KEYS, headers=bearer(owner_secret)).json["data"]]
    assert other_key.id not in listed


def test_expired_key_is_401_api_key_expired(client, session, owner):
    key, secret = make_key(session, owner)
    assert client.get(ACCOUNT, headers=bearer(secret)).status_code == 200
    row = session.get(ApiKey, key.id)
    row.expires_at = utcnow() - timedelta(minutes=1)
    session.commit()
    assert_error(client.get(ACCOUNT, headers=bearer(secret)), 401, "api_key_expired")


# --- 3. Scopes and roles -----------------------------------------------------------------------

def test_read_only_key_cannot_create_keys(client, session, owner):
    _key, secret = make_key(session, owner, scopes=["read"])
    assert client.get(ACCOUNT, headers=bearer(secret)).status_code == 200
    assert_error(client.post(KEYS, headers=bearer(secret), json={"name": "x"}),
                 403, "insufficient_scope")
    assert_error(client.get(KEYS, headers=bearer(secret)), 403, "insufficient_scope")
    assert len(key_rows(session, name="x")) == 0


def test_member_cannot_make_a_key_beyond_their_role(client, session, owner):
    workspace = workspace_of(session, owner)
    member = add_member(session, workspace, "member@example.com", "member")
    with pytest.raises(Forbidden) as excinfo:
        apikeys.create_key(session, workspace_id=workspace, creator_id=member.id,
                           creator_role="member", name="escalate", scopes=["read", "admin"])
    assert excinfo.value.code == "scope_exceeds_role"
    assert excinfo.value.status == 403
    session.rollback()
    assert key_rows(session, name="escalate") == []

    # A member's own key has the member's scopes and cannot manage keys over the API either.
    _key, secret = make_key(session, member)
    account = client.get(ACCOUNT, headers=bearer(secret)).json
    assert account["role"] == "member"
    assert "admin" not in account["scopes"]
    assert_error(client.post(KEYS, headers=bearer(secret),
                             json={"name": "escalate", "scopes": ["admin"]}), 403)
    assert key_rows(session, name="escalate") == []


def test_member_console_session_cannot_create_admin_key(client, session, owner):
    add_member(session, workspace_of(session, owner), "member@example.com", "member")
    login(client, "member@example.com")
    token = get_csrf(client, "/")
    response = client.post(KEYS, json={"name": "escalate", "scopes": ["admin"]},
                           headers={"X-CSRFToken": token})
    assert_error(response, 403)
    assert key_rows(session, name="escalate") == []


def test_viewer_key_reads_account_but_cannot_list_keys(client, session, owner):
    viewer = add_member(session, workspace_of(session, owner), "viewer@example.com", "viewer")
    _key, secret = make_key(session, viewer)
    response = client.get(ACCOUNT, headers=bearer(secret))
    assert response.status_code == 200
    assert response.json["role"] == "viewer"
    assert response.json["workspace"]["id"] == workspace_of(session, owner)
    assert response.json["scopes"] == ["read"]
    assert_error(client.get(KEYS, headers=bearer(secret)), 403, "insufficient_scope")


def test_mass_assignment_fields_are_ignored(client, session, owner):
    workspace = workspace_of(session, owner)
    admin = add_member(session, workspace, "admin@example.com", "admin")
    _key, secret = make_key(session, admin)
    other = make_user(session, "other@example.com")
    other_ws = workspace_of(session, other)
    response = client.post(KEYS, headers=bearer(secret), json={
        "name": "sneaky", "role": "owner", "workspace_id": other_ws, "id": "key_chosen",
        "created_by_id": other.id, "secret_hash": "0" * 64, "revoked_at": None,
        "prefix": "br_live_", "last4": "AAAA"})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.json["id"] != "key_chosen"
    assert response.json["last4"] == response.json["secret"][-4:]
    (row,) = key_rows(session, name="sneaky")
    assert row.workspace_id == workspace
    assert row.role == "admin"
    assert row.created_by_id == admin.id
    assert row.secret_hash == hashlib.sha256(response.json["secret"].encode()).hexdigest()
    account = client.get(ACCOUNT, headers=bearer(response.json["secret"])).json
    assert account["role"] == "admin"
    assert account["workspace"]["id"] == workspace
    assert key_rows(session, workspace_id=other_ws, name="sneaky") == []


def test_key_never_exceeds_creators_current_role(client, session, owner):
    workspace = workspace_of(session, owner)
    admin = add_member(session, workspace, "admin@example.com", "admin")
    _key, secret = make_key(session, admin)
    assert client.get(KEYS, headers=bearer(secret)).status_code == 200
    membership = session.scalars(select(Membership).where(
        Membership.user_id == admin.id, Membership.workspace_id == workspace)).one()
    membership.role = "viewer"
    session.commit()
    assert_error(client.get(KEYS, headers=bearer(secret)), 403)


def test_key_of_a_removed_member_stops_working(client, session, owner):
    workspace = workspace_of(session, owner)
    admin = add_member(session, workspace, "admin@example.com", "admin")
    _key, secret = make_key(session, admin)
    assert client.get(ACCOUNT, headers=bearer(secret)).status_code == 200
    membership = session.scalars(select(Membership).where(
        Membership.user_id == admin.id, Membership.workspace_id == workspace)).one()
    session.delete(membership)
    session.commit()
    response = client.get(ACCOUNT, headers=bearer(secret))
    assert response.status_code in (401, 403), response.get_data(as_text=True)[:300]
    assert_error(response, response.status_code)


# --- 4. Console session on /v1 ------------------------------------------------------------------

def test_console_session_reads_account_without_bearer(client, session, owner):
    login(client)
    response = client.get(ACCOUNT)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.json
    assert body["user"]["id"] == owner.id
    assert body["workspace"]["id"] == workspace_of(session, owner)
    assert body["role"] == "owner"
    assert body["mode"] == "live"
    assert body["api_key"] is None
    assert body["credit_balance"] == "5.000000"


def test_console_session_post_needs_csrf_token(client, session, owner):
    login(client)
    assert_error(client.post(KEYS, json={"name": "from-console"}), 400, "csrf_failed")
    assert_error(client.post(KEYS, json={"name": "from-console"},
                             headers={"X-CSRFToken": "not-the-token"}), 400, "csrf_failed")
    assert key_rows(session, name="from-console") == []

    token = get_csrf(client, "/")
    response = client.post(KEYS, json={"name": "from-console"}, headers={"X-CSRFToken": token})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.json["secret"].startswith("br_live_")
    (row,) = key_rows(session, name="from-console")
    assert row.created_by_id == owner.id


def test_console_session_cross_site_post_refused_even_with_token(client, session, owner):
    login(client)
    token = get_csrf(client, "/")
    response = client.post(KEYS, json={"name": "x-site"},
                           headers={"X-CSRFToken": token, "Sec-Fetch-Site": "cross-site"})
    assert_error(response, 400, "csrf_failed")
    assert key_rows(session, name="x-site") == []


def test_dropping_the_session_cookie_loses_v1_access(client, session, owner):
    login(client)
    assert client.get(ACCOUNT).status_code == 200
    client.delete_cookie("br_session")
    assert_error(client.get(ACCOUNT), 401, "missing_api_key")


def test_bearer_post_needs_no_csrf_token(client, session, owner, owner_secret):
    # A fresh client (no cookie) and a logged-in one: a Bearer call is exempt either way.
    response = client.post(KEYS, headers=bearer(owner_secret), json={"name": "no-csrf-1"})
    assert response.status_code == 201, response.get_data(as_text=True)
    login(client)
    response = client.post(KEYS, headers=bearer(owner_secret), json={"name": "no-csrf-2"})
    assert response.status_code == 201, response.get_data(as_text=True)


def test_post_without_any_credential_is_401(client, owner):
    assert_error(client.post(KEYS, json={"name": "anon"}), 401, "missing_api_key")


# --- 5. Idempotency-Key --------------------------------------------------------------------------

def test_idempotency_key_replays_first_response(client, session, owner, owner_secret):
    headers = {**bearer(owner_secret), "Idempotency-Key": "create-ci-key-1"}
    body = {"name": "idem", "scopes": ["read"]}
    first = client.post(KEYS, headers=headers, json=body)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    second = client.post(KEYS, headers=headers, json=body)
    assert second.status_code == 201
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.is_json
    assert second.json["id"] == first.json["id"]
    assert second.json == {**first.json, "secret": None}  # the secret is never stored
    from batchrouter.models import IdempotencyRecord
    stored = session.scalars(select(IdempotencyRecord)).all()
    assert all(first.json["secret"] not in (r.response_body or "") for r in stored)
    assert len(key_rows(session, name="idem")) == 1

    conflict = client.post(KEYS, headers=headers, json={"name": "idem", "scopes": ["quote"]})
    assert_error(conflict, 409, "idempotency_conflict")
    assert len(key_rows(session, name="idem")) == 1
    # Same body again still replays after the conflict.
    third = client.post(KEYS, headers=headers, json=body)
    assert third.status_code == 201 and third.json["id"] == first.json["id"]


def test_idempotency_keys_are_scoped_to_the_workspace(client, session, owner, owner_secret):
    other = make_user(session, "other@example.com")
    _key, other_secret = make_key(session, other)
    body = {"name": "shared-idem"}
    a = client.post(KEYS, headers={**bearer(owner_secret), "Idempotency-Key": "k1"}, json=body)
    b = client.post(KEYS, headers={**bearer(other_secret), "Idempotency-Key": "k1"}, json=body)
    assert a.status_code == b.status_code == 201
    assert "Idempotent-Replayed" not in b.headers
    assert a.json["id"] != b.json["id"]
    assert a.json["secret"] != b.json["secret"]
    assert len(key_rows(session, name="shared-idem")) == 2

