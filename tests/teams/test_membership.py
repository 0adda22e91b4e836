"""Last-owner protection, leaving, removal, ownership transfer, renaming, switching and
creating workspaces, through the console and the API."""
from __future__ import annotations

import re

import pytest

from batchrouter import teams
from batchrouter.errors import Conflict
from batchrouter.models import Membership
from tests.factories import bearer, login, make_key, make_user, post_form, workspace_of
from tests.teams.helpers import (
    assert_error,
    events,
    html,
    redirected_to,
    role_of,
    session_workspace,
)

SECRET_RE = re.compile(r"br_(?:live|test)_[0-9A-Za-z]{49}")
LAST_OWNER = ("A workspace needs at least one owner. Make another member an owner (or transfer "
              "ownership) first.")


def console(app, email="owner@example.com"):
    client = app.test_client()
    login(client, email)
    return client


# --- the last owner -------------------------------------------------------------------------

def test_the_last_owner_cannot_be_demoted(app, db, team):
    owner = console(app)
    post_form(owner, f"/team/members/{team.user_id('owner')}/role", {"role": "admin"},
              page="/team")
    assert LAST_OWNER in html(owner.get("/team"))
    assert role_of(db, team.workspace_id, "owner@example.com") == "owner"
    assert events(db, "member_role_changed") == []


def test_the_last_owner_cannot_be_demoted_through_the_api(client, db, session, team):
    secret = make_key(session, team.users["owner"])[1]
    response = client.patch(f"/v1/workspace/members/{team.user_id('owner')}",
                            headers=bearer(secret), json={"role": "member"})
    error = assert_error(response, 409, "last_owner")
    assert error["message"] == LAST_OWNER
    assert role_of(db, team.workspace_id, "owner@example.com") == "owner"


def test_the_last_owner_cannot_leave(app, db, team):
    owner = console(app)
    response = post_form(owner, "/team/leave", {}, page="/team")
    assert redirected_to(response, "/team")
    assert ("You are the last owner of this workspace. Make another member an owner (or "
            "transfer ownership) before leaving.") in html(owner.get("/team"))
    assert role_of(db, team.workspace_id, "owner@example.com") == "owner"
    assert events(db, "member_left") == []


def test_the_last_owner_of_a_solo_workspace_cannot_leave_either(app, db, session):
    make_user(session, "solo@example.com")
    solo = console(app, "solo@example.com")
    post_form(solo, "/team/leave", {}, page="/team")
    assert "You are the last owner of this workspace." in html(solo.get("/team"))


def test_with_a_second_owner_the_first_may_step_down_and_leave(app, db, team):
    owner = console(app)
    post_form(owner, f"/team/members/{team.user_id('admin')}/role", {"role": "owner"},
              page="/team")
    assert role_of(db, team.workspace_id, "admin@example.com") == "owner"
    post_form(owner, f"/team/members/{team.user_id('owner')}/role", {"role": "admin"},
              page="/team")
    assert role_of(db, team.workspace_id, "owner@example.com") == "admin"
    # The new sole owner is protected in turn.
    second = console(app, "admin@example.com")
    post_form(second, f"/team/members/{team.user_id('admin')}/role", {"role": "member"},
              page="/team")
    assert LAST_OWNER in html(second.get("/team"))
    response = post_form(owner, "/team/leave", {}, page="/team")
    assert redirected_to(response, "/")
    assert role_of(db, team.workspace_id, "owner@example.com") is None


def test_of_two_owners_only_one_can_step_down(db, team):
    """The domain rule itself: owners are re-counted (under the workspace lock) on every
    demotion, so stepping down one after the other stops at the last owner."""
    with db.session() as s:
        owner = teams.Actor(user_id=team.user_id("owner"), role="owner")
        teams.change_role(s, team.workspace_id, team.user_id("admin"), "owner", owner)
    with db.session() as s:
        teams.change_role(s, team.workspace_id, team.user_id("owner"), "admin",
                          teams.Actor(user_id=team.user_id("owner"), role="owner"))
    with db.session() as s, pytest.raises(Conflict):
        teams.change_role(s, team.workspace_id, team.user_id("admin"), "admin",
                          teams.Actor(user_id=team.user_id("admin"), role="owner"))
    assert role_of(db, team.workspace_id, "admin@example.com") == "owner"


# --- leaving and removal --------------------------------------------------------------------

def test_leaving_moves_sessions_to_another_workspace_and_revokes_keys(app, db, session, team):
    friend = make_user(session, "friend@example.com")
    own_workspace = workspace_of(session, friend)
    session.add(Membership(workspace_id=team.workspace_id, user_id=friend.id, role="admin"))
    session.commit()
    client = console(app, "friend@example.com")
    post_form(client, "/workspaces/switch", {"workspace_id": team.workspace_id}, page="/")
    created = post_form(client, "/api-keys", {"name": "team key", "mode": "live",
                                              "expires": "never"})
    key_secret = SECRET_RE.search(html(created)).group(0)
    assert client.get("/v1/auth/account", headers=bearer(key_secret)).status_code == 200

    response = post_form(client, "/team/leave", {}, page="/team")
    assert redirected_to(response, "/")
    dashboard = html(client.get("/"))
    assert "You left owner&#39;s workspace." in dashboard
    assert "<h1>friend&#39;s workspace</h1>" in dashboard
    assert session_workspace(db, friend.id) == [own_workspace]
    assert client.get("/v1/auth/account", headers=bearer(key_secret)).status_code == 401
    [revoked] = events(db, "api_key_revoked", team.workspace_id)
    assert revoked.details["reason"] == "member_left"
    assert len(events(db, "member_left", team.workspace_id)) == 1


def test_a_removed_member_loses_the_workspace_in_open_sessions(app, db, team):
    member = console(app, "member@example.com")
    assert "<h1>owner&#39;s workspace</h1>" in html(member.get("/"))
    owner = console(app)
    post_form(owner, f"/team/members/{team.user_id('member')}/remove", {}, page="/team")

    page = member.get("/")
    assert page.status_code == 200
    assert "No workspace" in html(page) and "owner&#39;s workspace" not in html(page)
    assert member.get("/team").status_code == 403
    assert member.get("/v1/workspace/members").status_code == 401  # no workspace to act in
    [event] = events(db, "member_removed", team.workspace_id)
    assert event.details["target_email"] == "member@example.com"
    assert event.user_id == team.user_id("owner")


def test_someone_without_a_workspace_can_create_one(app, db, team):
    member = console(app, "member@example.com")
    post_form(member, "/team/leave", {}, page="/team")
    assert "You are not in a workspace" in html(member.get("/"))
    response = post_form(member, "/workspaces", {"name": "Fresh Start"}, page="/")
    assert redirected_to(response, "/")
    dashboard = html(member.get("/"))
    assert "<h1>Fresh Start</h1>" in dashboard and ">owner</span>" in dashboard
    assert "$5.00" in dashboard  # their first own workspace gets the starter credits


# --- transfer, rename, switch, create -------------------------------------------------------

def test_transfer_ownership_hands_over_and_keeps_the_old_owner_as_admin(app, db, team):
    owner = console(app)
    page = html(owner.get("/team"))
    assert "member@example.com (member)" in page  # offered in the transfer form
    post_form(owner, "/team/transfer", {"user_id": team.user_id("viewer")}, page="/team")
    assert role_of(db, team.workspace_id, "viewer@example.com") == "owner"
    assert role_of(db, team.workspace_id, "owner@example.com") == "admin"
    after = html(owner.get("/team"))
    assert "Transfer ownership" not in after  # no longer an owner
    [event] = events(db, "ownership_transferred", team.workspace_id)
    assert event.details["target_email"] == "viewer@example.com"
    assert event.details["previous_role"] == "viewer"
    # The old owner, now an admin, is free to leave.
    assert redirected_to(post_form(owner, "/team/leave", {}, page="/team"), "/")


def test_transfer_to_yourself_or_a_stranger_is_refused(app, db, session, team):
    stranger = make_user(session, "stranger@example.com")
    owner = console(app)
    post_form(owner, "/team/transfer", {"user_id": team.user_id("owner")}, page="/team")
    assert "Choose another member to transfer ownership to." in html(owner.get("/team"))
    post_form(owner, "/team/transfer", {"user_id": stranger.id}, page="/team")
    assert "No such member of this workspace." in html(owner.get("/team"))
    assert role_of(db, team.workspace_id, "owner@example.com") == "owner"


def test_rename_shows_everywhere_and_is_validated(app, db, team):
    admin = console(app, "admin@example.com")
    post_form(admin, "/team/rename", {"name": "  Night   Shift "}, page="/team")
    assert "<h1>Night Shift</h1>" in html(admin.get("/"))
    post_form(admin, "/team/rename", {"name": "   "}, page="/team")
    assert "Give the workspace a name of 1–120 characters." in html(admin.get("/team"))
    [event] = events(db, "workspace_renamed", team.workspace_id)
    assert event.details == {"old_name": "owner's workspace", "new_name": "Night Shift"}


def test_switching_workspaces_changes_what_the_console_shows(app, db, session, team):
    target = workspace_of(session, make_user(session, "boss@example.com"))
    session.add(Membership(workspace_id=target, user_id=team.user_id("viewer"), role="admin"))
    session.commit()
    viewer = console(app, "viewer@example.com")
    page = html(viewer.get("/"))
    assert 'id="workspace-switch"' in page
    assert "boss&#39;s workspace (admin)" in page
    assert f'value="{team.workspace_id}" selected>owner&#39;s workspace (viewer)' in page
    assert viewer.get("/api-keys").status_code == 403

    response = post_form(viewer, "/workspaces/switch", {"workspace_id": target}, page="/")
    assert redirected_to(response, "/")
    dashboard = html(viewer.get("/"))
    assert "<h1>boss&#39;s workspace</h1>" in dashboard and ">admin</span>" in dashboard
    assert viewer.get("/api-keys").status_code == 200  # an admin there
    assert session_workspace(db, team.user_id("viewer")) == [target]


def test_switching_to_a_workspace_you_do_not_belong_to_fails(app, db, session, team):
    stranger_ws = workspace_of(session, make_user(session, "stranger@example.com"))
    member = console(app, "member@example.com")
    response = post_form(member, "/workspaces/switch", {"workspace_id": stranger_ws}, page="/")
    assert response.status_code == 404
    assert session_workspace(db, team.user_id("member")) == [team.workspace_id]


def test_htmx_switch_answers_with_hx_redirect(app, session, team):
    from tests.factories import HX_CSRF_RE

    own = make_user(session, "two@example.com")
    session.add(Membership(workspace_id=team.workspace_id, user_id=own.id, role="viewer"))
    session.commit()
    client = console(app, "two@example.com")
    token = HX_CSRF_RE.search(html(client.get("/"))).group(1)
    response = client.post("/workspaces/switch", data={"workspace_id": team.workspace_id},
                           headers={"HX-Request": "true", "X-CSRFToken": token})
    assert response.status_code == 204 and response.headers["HX-Redirect"] == "/"
    assert "<h1>owner&#39;s workspace</h1>" in html(client.get("/"))


def test_a_second_workspace_starts_without_starter_credits(app, db, team):
    owner = console(app)
    response = post_form(owner, "/workspaces", {"name": "Side project"}, page="/team")
    assert redirected_to(response, "/")
    dashboard = html(owner.get("/"))
    assert "Workspace “Side project” created." in dashboard
    assert "<h1>Side project</h1>" in dashboard
    assert 'data-testid="balance">$0.00' in dashboard
    assert "owner&#39;s workspace (owner)" in dashboard  # the switcher lists both
    assert len(events(db, "workspace_created")) == 1


def test_a_workspace_needs_a_name(app, db, team):
    owner = console(app)
    response = post_form(owner, "/workspaces", {"name": "  "}, page="/team")
    assert redirected_to(response, "/team")
    assert "Give the workspace a name of 1–120 characters." in html(owner.get("/team"))
    assert events(db, "workspace_created") == []
