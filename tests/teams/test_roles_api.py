"""The role matrix through the JSON API (SPEC §2, §6; docs/roles.md): each key acts with its
creator's role in the workspace, and every route answers 403 below its role."""
from __future__ import annotations

import pytest

from tests.factories import bearer, get_csrf, login, make_key, make_user
from tests.teams.helpers import assert_error, emails, events, role_of

ACCOUNT = "/v1/auth/account"
KEYS = "/v1/auth/account/api-keys"
MEMBERS = "/v1/workspace/members"
INVITATIONS = "/v1/workspace/invitations"
EVENTS = "/v1/workspace/security-events"


def chat_item(item_id: str = "q1") -> dict:
    return {"customer_item_id": item_id, "operation": "responses", "model": "sandbox-chat",
            "input": {"messages": [{"role": "user", "content": "Say hello"}]}}


@pytest.fixture
def keys(session, team) -> dict:
    """A key for each role, with every scope that role allows."""
    return {role: make_key(session, user)[1] for role, user in team.users.items()}


@pytest.mark.parametrize("role", ["owner", "admin", "member", "viewer"])
def test_every_role_reads_the_account_and_the_member_list(client, team, keys, role):
    account = client.get(ACCOUNT, headers=bearer(keys[role]))
    assert account.status_code == 200
    assert account.json["role"] == role
    assert account.json["workspace"]["id"] == team.workspace_id

    members = client.get(MEMBERS, headers=bearer(keys[role]))
    assert members.status_code == 200
    listed = {m["email"]: m["role"] for m in members.json["data"]}
    assert listed == {f"{r}@example.com": r for r in team.users}
    assert members.json["data"][0]["role"] == "owner"  # owners first


@pytest.mark.parametrize("role, status", [("owner", 200), ("admin", 200), ("member", 403),
                                          ("viewer", 403)])
def test_api_keys_need_admin(client, keys, role, status):
    response = client.get(KEYS, headers=bearer(keys[role]))
    if status == 403:
        assert_error(response, 403, "insufficient_scope")
    else:
        assert response.status_code == 200 and len(response.json["data"]) == 4


@pytest.mark.parametrize("role, status", [("owner", 201), ("admin", 201), ("member", 201),
                                          ("viewer", 403)])
def test_quotes_need_member(client, keys, seeded_catalog, role, status):
    response = client.post("/v1/quotes/model", headers=bearer(keys[role]),
                           json={"items": [chat_item()]})
    if status == 403:
        assert_error(response, 403, "insufficient_scope")
    else:
        assert response.status_code == 201, response.json
        assert response.json["id"].startswith("qlock_")


@pytest.mark.parametrize("role, status", [("owner", 200), ("admin", 200), ("member", 403),
                                          ("viewer", 403)])
def test_rename_needs_admin(client, db, team, keys, role, status):
    response = client.patch("/v1/workspace", headers=bearer(keys[role]),
                            json={"name": f"Renamed by {role}"})
    assert response.status_code == status
    name = client.get(ACCOUNT, headers=bearer(keys["owner"])).json["workspace"]["name"]
    assert (name == f"Renamed by {role}") is (status == 200)
    assert len(events(db, "workspace_renamed", team.workspace_id)) == (status == 200)


@pytest.mark.parametrize("role, status", [("owner", 201), ("admin", 201), ("member", 403),
                                          ("viewer", 403)])
def test_inviting_needs_admin(client, db, keys, role, status):
    response = client.post(INVITATIONS, headers=bearer(keys[role]),
                           json={"email": "new@example.com", "role": "viewer"})
    assert response.status_code == status
    sent = emails(db, template="invitation", to="new@example.com")
    if status == 201:
        assert response.json["status"] == "pending" and response.json["role"] == "viewer"
        assert "token" not in response.json  # the link only travels by email
        assert len(sent) == 1
    else:
        assert_error(response, 403, "insufficient_scope")
        assert sent == []
    listing = client.get(INVITATIONS, headers=bearer(keys[role]))
    assert listing.status_code == (200 if status == 201 else 403)


@pytest.mark.parametrize("role, status", [("owner", 200), ("admin", 200), ("member", 403),
                                          ("viewer", 403)])
def test_security_events_need_admin(client, keys, role, status):
    response = client.get(EVENTS, headers=bearer(keys[role]))
    assert response.status_code == status
    if status == 200:
        kinds = [e["kind"] for e in response.json["data"]]
        assert kinds.count("api_key_created") == 4


@pytest.mark.parametrize("actor, target, new_role, status, code", [
    ("owner", "member", "owner", 200, None),       # owners grant the owner role
    ("owner", "admin", "viewer", 200, None),
    ("admin", "member", "viewer", 200, None),
    ("admin", "viewer", "admin", 200, None),       # admins grant up to admin
    ("admin", "member", "owner", 403, "owner_required"),
    ("admin", "owner", "member", 403, "owner_required"),
    ("member", "viewer", "member", 403, "insufficient_scope"),
    ("viewer", "member", "viewer", 403, "insufficient_scope"),
])
def test_role_change_matrix(client, db, team, keys, actor, target, new_role, status, code):
    response = client.patch(f"/v1/workspace/members/{team.user_id(target)}",
                            headers=bearer(keys[actor]), json={"role": new_role})
    if status == 200:
        assert response.status_code == 200 and response.json["role"] == new_role
        assert role_of(db, team.workspace_id, team.email(target)) == new_role
        [event] = events(db, "member_role_changed", team.workspace_id)
        assert event.details["old_role"] == target and event.details["new_role"] == new_role
        assert event.user_id == team.user_id(actor)
    else:
        assert_error(response, 403, code)
        assert role_of(db, team.workspace_id, team.email(target)) == target
        assert events(db, "member_role_changed") == []


def test_unknown_role_is_refused(client, team, keys):
    response = client.patch(f"/v1/workspace/members/{team.user_id('member')}",
                            headers=bearer(keys["owner"]), json={"role": "superuser"})
    assert_error(response, 422, "invalid_role")


@pytest.mark.parametrize("actor, target, status, code", [
    ("owner", "admin", 200, None),
    ("admin", "viewer", 200, None),
    ("admin", "admin", 200, None),  # removing yourself is leaving
    ("admin", "owner", 403, "owner_required"),
    ("member", "viewer", 403, "insufficient_scope"),
    ("owner", "owner", 409, "last_owner"),  # the last owner cannot leave
])
def test_remove_matrix(client, db, team, keys, actor, target, status, code):
    response = client.delete(f"/v1/workspace/members/{team.user_id(target)}",
                             headers=bearer(keys[actor]))
    if status == 200:
        assert response.status_code == 200, response.json
        assert role_of(db, team.workspace_id, team.email(target)) is None
        # The removed person's key stopped working at once (and is revoked, not just dead).
        assert_error(client.get(ACCOUNT, headers=bearer(keys[target])), 401)
    else:
        assert_error(response, status, code)
        assert role_of(db, team.workspace_id, team.email(target)) == target
        assert client.get(ACCOUNT, headers=bearer(keys[target])).status_code == 200


@pytest.mark.parametrize("actor, status, code", [("owner", 200, None),
                                                 ("admin", 403, "insufficient_role"),
                                                 ("member", 403, "insufficient_scope")])
def test_transfer_ownership_needs_the_owner(client, db, team, keys, actor, status, code):
    response = client.post("/v1/workspace/transfer-ownership", headers=bearer(keys[actor]),
                           json={"user_id": team.user_id("member")})
    if status == 200:
        assert response.json["role"] == "owner"
        assert role_of(db, team.workspace_id, "member@example.com") == "owner"
        assert role_of(db, team.workspace_id, "owner@example.com") == "admin"
        assert len(events(db, "ownership_transferred", team.workspace_id)) == 1
    else:
        assert_error(response, status, code)
        assert role_of(db, team.workspace_id, "owner@example.com") == "owner"


def test_a_demoted_admins_key_loses_admin_routes_at_once(client, team, keys):
    assert client.get(KEYS, headers=bearer(keys["admin"])).status_code == 200
    demoted = client.patch(f"/v1/workspace/members/{team.user_id('admin')}",
                           headers=bearer(keys["owner"]), json={"role": "viewer"})
    assert demoted.status_code == 200
    assert_error(client.get(KEYS, headers=bearer(keys["admin"])), 403, "insufficient_scope")
    account = client.get(ACCOUNT, headers=bearer(keys["admin"]))
    assert account.json["role"] == "viewer" and account.json["scopes"] == ["read"]


def test_console_session_calls_follow_the_role_too(app, team):
    """A viewer signed in to the console cannot use the API beyond read either."""
    client = app.test_client()
    login(client, "viewer@example.com")
    token = get_csrf(client, "/team")
    assert client.get(MEMBERS).status_code == 200
    response = client.post(INVITATIONS, json={"email": "x@example.com"},
                           headers={"X-CSRFToken": token})
    assert_error(response, 403, "insufficient_scope")


def test_members_of_another_workspace_are_out_of_reach(client, db, session, team, keys):
    stranger = make_user(session, "stranger@example.com")
    stranger_key = make_key(session, stranger)[1]
    response = client.patch(f"/v1/workspace/members/{team.user_id('member')}",
                            headers=bearer(stranger_key), json={"role": "viewer"})
    assert_error(response, 404, "member_not_found")
    removal = client.delete(f"/v1/workspace/members/{team.user_id('member')}",
                            headers=bearer(stranger_key))
    assert_error(removal, 404, "member_not_found")
    assert role_of(db, team.workspace_id, "member@example.com") == "member"
