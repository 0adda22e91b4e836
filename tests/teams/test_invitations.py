"""Invitations by email (SPEC §9 team page): an expiring, single-use link; the invitee signs
up or signs in to accept; accepting adds the membership and switches the session to it."""
from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from tests.factories import PASSWORD, bearer, get_csrf, login, make_key, make_user, post_form
from tests.teams.helpers import (
    assert_error,
    emails,
    events,
    html,
    invitation_path,
    redirected_to,
    role_of,
    session_workspace,
    user_by_email,
)


def invite(app, email="new@example.com", role="member", inviter="owner@example.com"):
    """Sign in as `inviter` and send an invitation from the team page."""
    client = app.test_client()
    login(client, inviter)
    response = post_form(client, "/team/invitations", {"email": email, "role": role},
                         page="/team")
    assert redirected_to(response, "/team"), html(response)[:300]
    return client


def test_the_invitation_email_carries_a_working_link(app, db, team):
    invite(app, role="viewer")
    [message] = emails(db, template="invitation", to="new@example.com")
    assert message.subject == "owner@example.com invited you to owner's workspace on BatchRouter"
    assert "as a viewer" in message.text and "expires in 7 days" in message.text
    path = invitation_path(db, "new@example.com")

    page = app.test_client().get(path)
    assert page.status_code == 200
    body = html(page)
    assert "<h1>Join owner&#39;s workspace</h1>" in body
    assert "new@example.com" in body and ">viewer</span>" in body
    assert "Create account and join" in body and "Sign in to accept" in body
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "no-store" in page.headers["Cache-Control"]
    [event] = events(db, "member_invited", team.workspace_id)
    assert event.details == {"invitation_id": event.details["invitation_id"],
                             "invited_email": "new@example.com", "role": "viewer"}


def test_a_newcomer_signs_up_from_the_link_and_lands_in_the_workspace(app, db, team):
    invite(app, role="member")
    path = invitation_path(db, "new@example.com")
    newcomer = app.test_client()
    token = get_csrf(newcomer, path)
    response = newcomer.post(f"{path}/signup", data={"password": PASSWORD, "name": "Nova",
                                                     "csrf_token": token})
    assert redirected_to(response, "/")

    dashboard = html(newcomer.get("/"))
    assert "Welcome to owner&#39;s workspace." in dashboard
    assert "<h1>owner&#39;s workspace</h1>" in dashboard and ">member</span>" in dashboard
    assert "to create live API keys" not in dashboard  # the link proved the address
    assert role_of(db, team.workspace_id, "new@example.com") == "member"
    user = user_by_email(db, "new@example.com")
    assert user.is_verified and user.name == "Nova"
    assert session_workspace(db, user.id) == [team.workspace_id]
    # An invitee joins the team instead of getting a workspace (and starter credits) of their own.
    assert 'id="workspace-switch"' not in dashboard
    [accepted] = events(db, "invitation_accepted", team.workspace_id)
    assert accepted.user_id == user.id and accepted.details["role"] == "member"
    owner = app.test_client()
    login(owner)
    assert "new@example.com" in html(owner.get("/team")).split("<h2>Members</h2>")[1]


def test_an_existing_user_signs_in_then_accepts_and_is_switched(app, db, session, team):
    make_user(session, "friend@example.com")
    invite(app, "friend@example.com", role="admin")
    path = invitation_path(db, "friend@example.com")

    friend = app.test_client()
    page = html(friend.get(path))
    assert "Create account and join" not in page  # the account exists: sign in instead
    assert "/login?next=" in page

    token = get_csrf(friend, "/login")
    response = friend.post("/login", data={"email": "friend@example.com", "password": PASSWORD,
                                           "next": path, "csrf_token": token})
    assert urlsplit(response.headers["Location"]).path == path
    accept_page = html(friend.get(path))
    assert "You are signed in as <strong>friend@example.com</strong>" in accept_page
    response = post_form(friend, f"{path}/accept", {}, page=path)
    assert redirected_to(response, "/")

    dashboard = html(friend.get("/"))
    assert "You joined owner&#39;s workspace as admin." in dashboard
    assert "<h1>owner&#39;s workspace</h1>" in dashboard
    assert 'id="workspace-switch"' in dashboard  # two workspaces now: the switcher appears
    assert "friend&#39;s workspace (owner)" in dashboard
    assert role_of(db, team.workspace_id, "friend@example.com") == "admin"
    assert friend.get("/api-keys").status_code == 200  # acting as admin there


def test_a_used_link_cannot_be_used_again(app, db, session, team):
    invite(app)
    path = invitation_path(db, "new@example.com")
    first = app.test_client()
    first.post(f"{path}/signup", data={"password": PASSWORD, "csrf_token": get_csrf(first, path)})
    assert role_of(db, team.workspace_id, "new@example.com") == "member"

    make_user(session, "sneaky@example.com")
    second = app.test_client()
    reused = second.get(path)
    assert reused.status_code == 400
    assert "This invitation has already been used." in html(reused)
    login(second, "sneaky@example.com")
    token = get_csrf(second, "/account")
    response = second.post(f"{path}/accept", data={"csrf_token": token})
    assert response.status_code == 400
    assert "already been used" in html(response)
    assert role_of(db, team.workspace_id, "sneaky@example.com") is None


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_INVITE_TTL": 1}], indirect=True)
def test_an_expired_link_is_refused(app, db, team):
    invite(app)
    [message] = emails(db, template="invitation", to="new@example.com")
    assert "expires in 1 second:" in message.text
    path = invitation_path(db, "new@example.com")
    time.sleep(1.2)

    newcomer = app.test_client()
    page = newcomer.get(path)
    assert page.status_code == 400
    assert "This invitation has expired." in html(page)
    token = get_csrf(newcomer, "/login")
    response = newcomer.post(f"{path}/signup", data={"password": PASSWORD, "csrf_token": token})
    assert response.status_code == 400
    assert user_by_email(db, "new@example.com") is None
    owner = app.test_client()
    login(owner)
    assert 'data-testid="invitation-row"' not in html(owner.get("/team"))  # not pending


def test_a_withdrawn_link_is_refused(app, db, team):
    owner = invite(app)
    path = invitation_path(db, "new@example.com")
    page = html(owner.get("/team"))
    [action] = [a for a in page.split('action="')[1:] if a.startswith("/team/invitations/inv_")]
    response = post_form(owner, action.split('"')[0], {}, page="/team")
    assert redirected_to(response, "/team")
    assert "Invitation to new@example.com withdrawn." in html(owner.get("/team"))

    refused = app.test_client().get(path)
    assert refused.status_code == 400 and "This invitation was withdrawn." in html(refused)
    assert len(events(db, "invitation_revoked", team.workspace_id)) == 1


def test_inviting_again_replaces_the_earlier_link(app, db, team):
    owner = invite(app, role="viewer")
    first = invitation_path(db, "new@example.com")
    post_form(owner, "/team/invitations", {"email": "New@Example.com", "role": "admin"},
              page="/team")
    second = invitation_path(db, "new@example.com")
    assert first != second
    assert "withdrawn" in html(app.test_client().get(first))
    page = html(owner.get("/team"))
    assert page.count('data-testid="invitation-row"') == 1
    newcomer = app.test_client()
    newcomer.post(f"{second}/signup", data={"password": PASSWORD,
                                            "csrf_token": get_csrf(newcomer, second)})
    assert role_of(db, team.workspace_id, "new@example.com") == "admin"


def test_inviting_a_member_or_a_bad_address_is_refused(app, db, team):
    owner = app.test_client()
    login(owner)
    for email, message in [("member@example.com",
                            "member@example.com is already a member of this workspace."),
                           ("not-an-email", "Enter a valid email address."),
                           ("agent-x@agents.invalid", "That address cannot receive email.")]:
        response = post_form(owner, "/team/invitations", {"email": email, "role": "member"},
                             page="/team")
        assert redirected_to(response, "/team")
        assert message in html(owner.get("/team"))
    assert emails(db, template="invitation") == []


def test_only_owners_invite_owners(app, db, team):
    admin = app.test_client()
    login(admin, "admin@example.com")
    assert "<option value=\"owner\"" not in html(admin.get("/team"))
    post_form(admin, "/team/invitations", {"email": "boss@example.com", "role": "owner"},
              page="/team")
    assert "Only an owner can invite another owner." in html(admin.get("/team"))
    assert emails(db, template="invitation") == []


def test_accepting_while_already_a_member_keeps_the_link(app, db, team):
    owner = app.test_client()
    login(owner)
    # viewer@ is a member already, so invite a newcomer and let viewer@ try the link.
    post_form(owner, "/team/invitations", {"email": "new@example.com", "role": "admin"},
              page="/team")
    path = invitation_path(db, "new@example.com")
    viewer = app.test_client()
    login(viewer, "viewer@example.com")
    assert "You are already a member of owner" in html(viewer.get(path))
    response = post_form(viewer, f"{path}/accept", {}, page=path)
    assert response.status_code == 409
    assert role_of(db, team.workspace_id, "viewer@example.com") == "viewer"  # not promoted
    newcomer = app.test_client()
    newcomer.post(f"{path}/signup", data={"password": PASSWORD,
                                          "csrf_token": get_csrf(newcomer, path)})
    assert role_of(db, team.workspace_id, "new@example.com") == "admin"  # link still good


def test_signing_up_from_a_link_for_an_existing_account_is_refused(app, db, session, team):
    make_user(session, "friend@example.com")
    invite(app, "friend@example.com")
    path = invitation_path(db, "friend@example.com")
    client = app.test_client()
    response = client.post(f"{path}/signup", data={"password": "another passphrase",
                                                   "csrf_token": get_csrf(client, path)})
    assert response.status_code == 409
    assert "already exists: sign in to accept" in html(response)
    assert role_of(db, team.workspace_id, "friend@example.com") is None


def test_a_weak_password_on_the_invite_signup_keeps_the_link(app, db, team):
    invite(app)
    path = invitation_path(db, "new@example.com")
    client = app.test_client()
    response = client.post(f"{path}/signup", data={"password": "short",
                                                   "csrf_token": get_csrf(client, path)})
    assert response.status_code == 422
    assert "Use at least 8 characters." in html(response)
    assert user_by_email(db, "new@example.com") is None
    assert client.get(path).status_code == 200


def test_a_made_up_link_is_refused(client):
    response = client.get("/invitations/not-a-real-token")
    assert response.status_code == 400
    assert "This invitation link is not valid." in html(response)


def test_htmx_invite_swaps_the_members_region(app, db, team):
    from tests.factories import HX_CSRF_RE

    owner = app.test_client()
    login(owner)
    token = HX_CSRF_RE.search(html(owner.get("/team"))).group(1)
    headers = {"HX-Request": "true", "X-CSRFToken": token}
    response = owner.post("/team/invitations", data={"email": "new@example.com",
                                                      "role": "member"}, headers=headers)
    body = html(response)
    assert response.status_code == 200
    assert body.lstrip().startswith('<div id="members-region">') and "<html" not in body
    assert "Invitation sent to new@example.com." in body
    assert body.count('data-testid="invitation-row"') == 1
    refused = owner.post("/team/invitations", data={"email": "member@example.com",
                                                     "role": "member"}, headers=headers)
    assert refused.status_code == 422
    assert "already a member" in html(refused) and "<html" not in html(refused)


def test_invitations_through_the_api(client, db, session, team):
    secret = make_key(session, team.users["admin"])[1]
    created = client.post("/v1/workspace/invitations", headers=bearer(secret),
                          json={"email": "api@example.com", "role": "member"})
    assert created.status_code == 201
    listed = client.get("/v1/workspace/invitations", headers=bearer(secret)).json["data"]
    assert [i["email"] for i in listed] == ["api@example.com"]
    revoked = client.delete(f"/v1/workspace/invitations/{created.json['id']}",
                            headers=bearer(secret))
    assert revoked.status_code == 200 and revoked.json["status"] == "revoked"
    assert client.get("/v1/workspace/invitations", headers=bearer(secret)).json["data"] == []
    assert_error(client.post("/v1/workspace/invitations", headers=bearer(secret),
                             json={"email": "owner2@example.com", "role": "owner"}),
                 403, "owner_required")
    assert_error(client.post("/v1/workspace/invitations", headers=bearer(secret),
                             json={"role": "member"}), 422, "invalid_email")
