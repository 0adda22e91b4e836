"""Security log entries for every team and account change (SPEC §10) and the workspace
activity page that lists them for owners and admins."""
from __future__ import annotations

from batchrouter import records
from batchrouter.models import SecurityEvent
from tests.factories import PASSWORD, bearer, get_csrf, login, make_key, make_user, post_form, read
from tests.teams.helpers import EMAIL_CONFIRM_RE, emails, events, html, invitation_path

TEAM_KINDS = ("member_invited", "invitation_revoked", "invitation_accepted",
              "member_role_changed", "member_removed", "member_left", "ownership_transferred",
              "workspace_renamed", "workspace_created", "email_change_requested",
              "email_changed", "session_revoked", "account_deleted", "agent_registered")


def test_every_new_event_kind_has_a_label():
    for kind in TEAM_KINDS:
        assert records.label(kind) == records.LABELS[kind]


def walk_through_every_change(app, db, session, team):
    """Drive each team change once through the console, as people would."""
    owner = app.test_client()
    login(owner)
    post_form(owner, "/team/rename", {"name": "Night Shift"}, page="/team")
    post_form(owner, "/team/invitations", {"email": "gone@example.com", "role": "viewer"},
              page="/team")
    page = html(owner.get("/team"))
    withdraw = page.split('action="/team/invitations/')[1].split('"')[0]
    post_form(owner, f"/team/invitations/{withdraw}", {}, page="/team")
    post_form(owner, "/team/invitations", {"email": "new@example.com", "role": "member"},
              page="/team")
    path = invitation_path(db, "new@example.com")
    newcomer = app.test_client()
    newcomer.post(f"{path}/signup", data={"password": PASSWORD,
                                          "csrf_token": get_csrf(newcomer, path)})
    post_form(owner, f"/team/members/{team.user_id('member')}/role", {"role": "viewer"},
              page="/team")
    post_form(owner, f"/team/members/{team.user_id('viewer')}/remove", {}, page="/team")
    admin = app.test_client()
    login(admin, "admin@example.com")
    post_form(admin, "/team/leave", {}, page="/team")
    post_form(owner, "/team/transfer", {"user_id": team.user_id("member")}, page="/team")
    return owner


def test_each_team_change_is_logged_against_the_workspace(app, db, session, team):
    walk_through_every_change(app, db, session, team)
    logged = read(db, lambda s: [e.kind for e in s.query(SecurityEvent).filter(
        SecurityEvent.workspace_id == team.workspace_id)])
    for kind in ("workspace_renamed", "member_invited", "invitation_revoked",
                 "invitation_accepted", "member_role_changed", "member_removed",
                 "member_left", "ownership_transferred"):
        assert kind in logged, kind
    assert logged.count("member_invited") == 2
    [removed] = events(db, "member_removed", team.workspace_id)
    assert removed.ip == "127.0.0.1" and removed.email == "owner@example.com"


def test_the_activity_page_lists_them_newest_first(app, db, session, team):
    owner = walk_through_every_change(app, db, session, team)
    # The old owner is an admin now, which still opens the activity page.
    page = html(owner.get("/team/activity"))
    assert "<h1>Night Shift</h1>" in page
    for text in ("Workspace renamed", "“owner&#39;s workspace” → “Night Shift”",
                 "Teammate invited", "gone@example.com as viewer", "Invitation withdrawn",
                 "Invitation accepted", "new@example.com as member", "Role changed",
                 "member@example.com: member → viewer", "Member removed", "viewer@example.com",
                 "Left the workspace", "admin@example.com", "Ownership transferred",
                 "to member@example.com"):
        assert text in page, text
    assert page.index("Ownership transferred") < page.index("Workspace renamed")
    fragment = owner.get("/team/activity", headers={"HX-Request": "true"})
    assert html(fragment).lstrip().startswith('<section class="card" id="workspace-activity">')
    assert "br_live_" not in page and "br_test_" not in page


def test_activity_pages_back_in_time(app, db, session, team):
    owner = app.test_client()
    login(owner)
    for i in range(55):
        post_form(owner, "/team/rename", {"name": f"Name {i:02d}"}, page="/team")
    first = html(owner.get("/team/activity"))
    assert first.count('data-testid="event-row"') == 50
    assert "“Name 53” → “Name 54”" in first
    older = first.split('href="/team/activity?before=')[1].split('"')[0]
    second = html(owner.get(f"/team/activity?before={older}"))
    assert "“Name 53” → “Name 54”" not in second
    assert "“Name 00” → “Name 01”" in second
    rows = first.count('data-testid="event-row"') + second.count('data-testid="event-row"')
    total = len(read(db, lambda s: s.query(SecurityEvent).filter(
        SecurityEvent.workspace_id == team.workspace_id).all()))
    assert rows == total


def test_account_changes_are_logged_for_the_user(app, db, session):
    make_user(session)
    me, other = app.test_client(), app.test_client()
    login(me)
    login(other)
    post_form(me, "/account/email", {"new_email": "new@example.com",
                                     "current_password": PASSWORD}, page="/account")
    link = EMAIL_CONFIRM_RE.search(emails(db, template="email_change_confirm")[0].text).group(1)
    me.get(link)
    action = html(me.get("/account")).split('action="/account/sessions/ses_')[1].split('"')[0]
    post_form(me, f"/account/sessions/ses_{action}", {}, page="/account")
    activity = html(me.get("/account/activity"))
    for text in ("Email change requested", "Email changed", "Session signed out"):
        assert text in activity, text


def test_security_events_through_the_api(client, db, session, team):
    secret = make_key(session, team.users["admin"])[1]
    client.patch("/v1/workspace", headers=bearer(secret), json={"name": "First"})
    client.patch("/v1/workspace", headers=bearer(secret), json={"name": "Renamed"})
    first = client.get("/v1/workspace/security-events?limit=2", headers=bearer(secret)).json
    assert first["has_more"] is True and len(first["data"]) == 2
    newest = first["data"][0]
    assert newest["kind"] == "workspace_renamed"
    assert newest["actor_email"] == "admin@example.com"
    assert newest["summary"] == "“First” → “Renamed”"
    rest = client.get(f"/v1/workspace/security-events?before={first['data'][1]['id']}",
                      headers=bearer(secret)).json
    assert [e["kind"] for e in rest["data"]] == ["api_key_created"] and not rest["has_more"]
    bad = client.get("/v1/workspace/security-events?limit=0", headers=bearer(secret))
    assert bad.status_code == 400
