"""The role matrix through the console (SPEC §9; docs/roles.md): pages and forms refuse the
roles below them with 403, checked in the views and not only hidden in the templates."""
from __future__ import annotations

import pytest

from tests.factories import login, make_user, post_form
from tests.teams.helpers import emails, events, html, redirected_to, role_of

ALL = ("owner", "admin", "member", "viewer")


def signed_in_as(app, role: str):
    client = app.test_client()
    login(client, f"{role}@example.com")
    return client


@pytest.mark.parametrize("path, allowed, mark", [
    ("/", ALL, "Available credit"),
    ("/batches/new", ("owner", "admin", "member"), "New batch"),
    ("/api-keys", ("owner", "admin"), "<h1>API keys</h1>"),
    ("/team", ALL, "<h2>Members</h2>"),
    ("/team/activity", ("owner", "admin"), "Security activity"),
    ("/account", ALL, "<h1>Account</h1>"),
    ("/operator/operators", (), "<h1>Operators</h1>"),
])
@pytest.mark.parametrize("role", ALL)
def test_page_matrix(app, team, path, allowed, mark, role):
    response = signed_in_as(app, role).get(path)
    if role in allowed:
        assert response.status_code == 200
        assert mark in html(response)
    else:
        assert response.status_code == 403
        assert mark not in html(response) and "Traceback" not in html(response)


@pytest.mark.parametrize("role", ALL)
def test_nav_offers_only_what_the_role_may_open(app, team, role):
    page = html(signed_in_as(app, role).get("/"))
    assert 'href="/team"' in page
    assert ('href="/api-keys"' in page) is (role in ("owner", "admin"))
    assert ('href="/batches/new"' in page) is (role != "viewer")
    team_page = html(signed_in_as(app, role).get("/team"))
    assert ('href="/team/activity"' in team_page) is (role in ("owner", "admin"))
    assert ("Invite a teammate" in team_page) is (role in ("owner", "admin"))
    assert ("Rename workspace" in team_page) is (role in ("owner", "admin"))
    assert ("Transfer ownership" in team_page) is (role == "owner")
    assert "Leave owner" in team_page  # everyone may leave


@pytest.mark.parametrize("role, allowed", [("owner", True), ("admin", True), ("member", False),
                                           ("viewer", False)])
def test_rename_form(app, db, team, role, allowed):
    client = signed_in_as(app, role)
    response = post_form(client, "/team/rename", {"name": "Night Shift"}, page="/team")
    if allowed:
        assert redirected_to(response, "/team")
        page = html(client.get("/team"))
        assert "Workspace renamed to “Night Shift”." in page and "<h1>Night Shift</h1>" in page
    else:
        assert response.status_code == 403
        assert events(db, "workspace_renamed") == []


@pytest.mark.parametrize("role, allowed", [("owner", True), ("admin", True), ("member", False),
                                           ("viewer", False)])
def test_invite_form(app, db, team, role, allowed):
    client = signed_in_as(app, role)
    response = post_form(client, "/team/invitations",
                         {"email": "new@example.com", "role": "member"}, page="/team")
    sent = emails(db, template="invitation", to="new@example.com")
    if allowed:
        assert redirected_to(response, "/team")
        page = html(client.get("/team"))
        assert "Invitation sent to new@example.com." in page
        assert page.count('data-testid="invitation-row"') == 1
        assert len(sent) == 1 and f"{role}@example.com invited you" in sent[0].text
    else:
        assert response.status_code == 403
        assert sent == []


@pytest.mark.parametrize("actor, target, new_role, outcome", [
    ("owner", "admin", "member", "changed"),
    ("owner", "member", "owner", "changed"),
    ("admin", "member", "viewer", "changed"),
    ("admin", "owner", "viewer", "Only an owner can grant, change or remove the owner role."),
    ("admin", "viewer", "owner", "Only an owner can grant, change or remove the owner role."),
    ("member", "viewer", "member", 403),
    ("viewer", "member", "viewer", 403),
])
def test_role_change_form(app, db, team, actor, target, new_role, outcome):
    client = signed_in_as(app, actor)
    response = post_form(client, f"/team/members/{team.user_id(target)}/role",
                         {"role": new_role}, page="/team")
    if outcome == 403:
        assert response.status_code == 403
        assert role_of(db, team.workspace_id, team.email(target)) == target
        return
    assert redirected_to(response, "/team")
    page = html(client.get("/team"))
    if outcome == "changed":
        assert f"{target}@example.com is now {new_role}." in page
        assert role_of(db, team.workspace_id, team.email(target)) == new_role
    else:
        assert outcome in page
        assert role_of(db, team.workspace_id, team.email(target)) == target


@pytest.mark.parametrize("actor, target, outcome", [
    ("owner", "admin", "removed"),
    ("admin", "member", "removed"),
    ("admin", "owner", "Only an owner can grant, change or remove the owner role."),
    ("member", "viewer", 403),
    ("viewer", "member", 403),
])
def test_remove_form(app, db, team, actor, target, outcome):
    client = signed_in_as(app, actor)
    response = post_form(client, f"/team/members/{team.user_id(target)}/remove", {},
                         page="/team")
    if outcome == 403:
        assert response.status_code == 403
    else:
        assert redirected_to(response, "/team")
        page = html(client.get("/team"))
        if outcome == "removed":
            assert f"{target}@example.com was removed." in page
            assert f"{target}@example.com" not in page.split("<h2>Members</h2>")[1]
        else:
            assert outcome in page
    gone = outcome == "removed"
    assert (role_of(db, team.workspace_id, team.email(target)) is None) is gone


@pytest.mark.parametrize("role, allowed", [("owner", True), ("admin", False),
                                           ("member", False), ("viewer", False)])
def test_transfer_form(app, db, team, role, allowed):
    client = signed_in_as(app, role)
    response = post_form(client, "/team/transfer", {"user_id": team.user_id("member")},
                         page="/team")
    if allowed:
        assert redirected_to(response, "/team")
        assert "member@example.com now owns this workspace; you are an admin." in \
            html(client.get("/team"))
        assert role_of(db, team.workspace_id, "member@example.com") == "owner"
        assert role_of(db, team.workspace_id, "owner@example.com") == "admin"
    else:
        assert response.status_code == 403
        assert role_of(db, team.workspace_id, "owner@example.com") == "owner"


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_every_role_below_owner_can_leave(app, db, team, role):
    client = signed_in_as(app, role)
    response = post_form(client, "/team/leave", {}, page="/team")
    assert redirected_to(response, "/")
    assert role_of(db, team.workspace_id, team.email(role)) is None
    page = client.get("/")
    assert "You left owner&#39;s workspace." in html(page)
    assert "No workspace" in html(page)  # their only workspace was this one
    assert client.get("/team").status_code == 403


def test_operator_page_lists_operators_for_operators_only(app, session, team):
    make_user(session, "ops@example.com", operator=True)
    make_user(session, "ops2@example.com", operator=True)
    client = app.test_client()
    login(client, "ops@example.com")
    page = html(client.get("/operator/operators"))
    assert page.count('data-testid="operator-row"') == 2
    assert "ops2@example.com" in page and "owner@example.com" not in page
    assert 'href="/operator/operators"' in html(client.get("/operator/system"))  # in the nav
