"""Account management (SPEC §9 account page): change email with a confirmation link and a
notice, sign out one other session, sessions revoked by a password change, delete account."""
from __future__ import annotations

import re

from sqlalchemy import select

from batchrouter.models import UserSession
from tests.factories import (
    PASSWORD,
    bearer,
    get_csrf,
    login,
    make_key,
    make_user,
    post_form,
    workspace_of,
)
from tests.teams.helpers import (
    EMAIL_CONFIRM_RE,
    emails,
    events,
    html,
    redirected_to,
    role_of,
    user_by_email,
)

NEW_PASSWORD = "a brand new passphrase"


def signed_in(client) -> bool:
    response = client.get("/account")
    return response.status_code == 200


def console(app, email="owner@example.com", password=PASSWORD):
    client = app.test_client()
    login(client, email, password)
    return client


def can_sign_in(app, email, password=PASSWORD) -> bool:
    client = app.test_client()
    response = client.post("/login", data={"email": email, "password": password,
                                           "csrf_token": get_csrf(client)})
    return response.status_code in (302, 303)


# --- change email ---------------------------------------------------------------------------

def test_changing_email_needs_the_password(app, db, session):
    make_user(session)
    client = console(app)
    response = post_form(client, "/account/email", {"new_email": "new@example.com",
                                                    "current_password": "wrong"},
                         page="/account")
    assert redirected_to(response, "/account")
    assert "The password is not right." in html(client.get("/account"))
    assert emails(db, template="email_change_confirm") == []
    assert events(db, "email_change_requested") == []


def test_email_change_confirms_at_the_new_address_and_tells_the_old(app, db, session):
    user = make_user(session)
    client = console(app)
    response = post_form(client, "/account/email", {"new_email": "New@Example.com",
                                                    "current_password": PASSWORD},
                         page="/account")
    assert redirected_to(response, "/account")
    assert "We sent a confirmation link to new@example.com." in html(client.get("/account"))

    [confirm] = emails(db, template="email_change_confirm")
    [notice] = emails(db, template="email_change_notice")
    assert confirm.to == "new@example.com" and notice.to == "owner@example.com"
    assert "new@example.com" in notice.text and "/account/email/confirm/" not in notice.text
    # Nothing has changed yet: the old address still signs in, the new one does not.
    assert user_by_email(db, "owner@example.com") is not None
    assert not can_sign_in(app, "new@example.com")

    link = EMAIL_CONFIRM_RE.search(confirm.text).group(1)
    opened = client.get(link)
    assert redirected_to(opened, "/account")
    page = html(client.get("/account"))
    assert "Your email address is now new@example.com." in page
    assert "new@example.com <span class=\"pill pill-ok\">verified</span>" in page
    assert can_sign_in(app, "new@example.com") and not can_sign_in(app, "owner@example.com")

    [changed] = emails(db, template="email_changed")
    assert changed.to == "owner@example.com" and "new@example.com" in changed.text
    [event] = events(db, "email_changed")
    assert event.user_id == user.id
    assert event.details == {"old_email": "owner@example.com", "new_email": "new@example.com"}
    assert "Email changed" in html(client.get("/account/activity"))

    reused = app.test_client().get(link)
    assert reused.status_code == 400
    assert "already been used" in html(reused)


def test_email_change_link_works_signed_out_too(app, db, session):
    make_user(session)
    client = console(app)
    post_form(client, "/account/email", {"new_email": "new@example.com",
                                         "current_password": PASSWORD}, page="/account")
    link = EMAIL_CONFIRM_RE.search(emails(db, template="email_change_confirm")[0].text).group(1)
    response = app.test_client().get(link)
    assert redirected_to(response, "/login")
    assert user_by_email(db, "new@example.com") is not None


def test_email_change_to_a_taken_or_same_address_is_refused(app, db, session):
    make_user(session)
    make_user(session, "taken@example.com")
    client = console(app)
    for email, message in [("taken@example.com", "Another account uses that email address."),
                           ("owner@example.com", "That is already your email address."),
                           ("nope", "Enter a valid email address.")]:
        post_form(client, "/account/email", {"new_email": email, "current_password": PASSWORD},
                  page="/account")
        assert message in html(client.get("/account"))
    assert emails(db, template="email_change_confirm") == []


def test_a_tampered_email_change_link_is_refused(app, db, session):
    make_user(session)
    client = console(app)
    post_form(client, "/account/email", {"new_email": "new@example.com",
                                         "current_password": PASSWORD}, page="/account")
    link = EMAIL_CONFIRM_RE.search(emails(db, template="email_change_confirm")[0].text).group(1)
    response = client.get(link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB"))
    assert response.status_code == 400
    assert user_by_email(db, "owner@example.com") is not None


# --- sessions -------------------------------------------------------------------------------

def session_actions(page: str) -> list[str]:
    return re.findall(r'action="(/account/sessions/ses_[^"]+/revoke)"', page)


def test_sign_out_one_other_session(app, db, session):
    make_user(session)
    me, laptop, phone = console(app), console(app), console(app)
    page = html(me.get("/account"))
    assert page.count('data-testid="session-row"') == 3
    actions = session_actions(page)
    assert len(actions) == 2  # no button for this session itself

    # Find the laptop's session: it is the one whose revocation signs the laptop out.
    response = post_form(me, actions[0], {}, page="/account")
    assert redirected_to(response, "/account")
    assert "That session is signed out." in html(me.get("/account"))
    still = [signed_in(laptop), signed_in(phone)]
    assert sorted(still) == [False, True]
    assert signed_in(me)
    assert html(me.get("/account")).count('data-testid="session-row"') == 2
    [event] = events(db, "session_revoked")
    assert event.details["count"] == 1 and event.details["session_id"] in actions[0]


def test_cannot_sign_out_this_session_or_someone_elses(app, db, session):
    make_user(session)
    make_user(session, "other@example.com")
    other = console(app, "other@example.com")
    other_action = session_actions(html(console(app, "other@example.com").get("/account")))[0]
    me = console(app)
    my_page = html(me.get("/account"))
    response = post_form(me, other_action, {}, page="/account")
    assert redirected_to(response, "/account")
    assert "No such active session." in html(me.get("/account"))
    assert signed_in(other)

    mine = session.scalars(select(UserSession).where(
        UserSession.user_id == user_by_email(db, "owner@example.com").id)).all()
    current = [s.id for s in mine if f"/account/sessions/{s.id}/revoke" not in my_page]
    assert len(current) == 1
    post_form(me, f"/account/sessions/{current[0]}/revoke", {}, page="/account")
    assert "That is this session: use Sign out instead." in html(me.get("/account"))


def test_a_password_change_signs_out_every_other_session(app, db, session):
    make_user(session)
    me, other = console(app), console(app)
    other_token = get_csrf(other, "/account")
    response = post_form(me, "/account/password", {"current_password": PASSWORD,
                                                   "new_password": NEW_PASSWORD},
                         page="/account")
    assert redirected_to(response, "/account")
    assert signed_in(me)
    assert not signed_in(other)
    # The stolen cookie is dead for the API too, and for forms posted with its old token.
    assert other.get("/v1/auth/account").status_code == 401
    late = other.post("/account/email", data={"new_email": "x@example.com",
                                              "current_password": NEW_PASSWORD,
                                              "csrf_token": other_token})
    assert redirected_to(late, "/login")
    assert emails(db, template="email_change_confirm") == []
    assert html(me.get("/account")).count('data-testid="session-row"') == 1


# --- delete account -------------------------------------------------------------------------

def test_deleting_needs_the_password(app, db, session):
    make_user(session)
    client = console(app)
    post_form(client, "/account/delete", {"current_password": "wrong"}, page="/account")
    assert "The password is not right." in html(client.get("/account"))
    assert user_by_email(db, "owner@example.com") is not None


def test_the_last_owner_of_a_team_cannot_delete_the_account(app, db, team):
    owner = console(app)
    page = html(owner.get("/account"))
    assert "You are the last owner of owner&#39;s workspace, which has other members." in page
    post_form(owner, "/account/delete", {"current_password": PASSWORD}, page="/account")
    assert ("You are the last owner of owner's workspace, which has other members. Transfer "
            "ownership or make another member an owner first.").replace("'", "&#39;") in \
        html(owner.get("/account"))
    assert user_by_email(db, "owner@example.com") is not None
    assert role_of(db, team.workspace_id, "owner@example.com") == "owner"


def test_deleting_a_solo_account_closes_its_workspace(app, db, session):
    user = make_user(session)
    workspace_id = workspace_of(session, user)
    secret = make_key(session, user)[1]
    client, other = console(app), console(app)
    response = post_form(client, "/account/delete", {"current_password": PASSWORD},
                         page="/account")
    assert redirected_to(response, "/login")
    assert "Your account was deleted." in html(client.get("/login"))
    assert not signed_in(client) and not signed_in(other)
    assert not can_sign_in(app, "owner@example.com")
    assert user_by_email(db, "owner@example.com") is None
    assert client.get("/v1/auth/account", headers=bearer(secret)).status_code == 401
    [event] = events(db, "account_deleted", workspace_id)
    assert event.details == {"workspace_closed": True}
    [goodbye] = emails(db, template="account_deleted")
    assert goodbye.to == "owner@example.com"
    # The address is free again: signing up with it creates a brand-new account.
    assert post_form(app.test_client(), "/signup",
                     {"email": "owner@example.com", "password": PASSWORD}).status_code == 200
    assert user_by_email(db, "owner@example.com").id != user.id


def test_a_member_deleting_the_account_leaves_the_team_intact(app, db, team):
    member = console(app, "member@example.com")
    post_form(member, "/account/delete", {"current_password": PASSWORD}, page="/account")
    assert user_by_email(db, "member@example.com") is None
    assert role_of(db, team.workspace_id, "member@example.com") is None
    owner = console(app)
    activity = html(owner.get("/team/activity"))
    assert "Account deleted" in activity and "member@example.com" in activity
    assert "member@example.com" not in html(owner.get("/team")).split("<h2>Members</h2>")[1]


def test_one_of_two_owners_may_delete_the_account(app, db, team):
    owner = console(app)
    post_form(owner, f"/team/members/{team.user_id('admin')}/role", {"role": "owner"},
              page="/team")
    assert "You are the last owner" not in html(owner.get("/account"))
    post_form(owner, "/account/delete", {"current_password": PASSWORD}, page="/account")
    assert user_by_email(db, "owner@example.com") is None
    assert role_of(db, team.workspace_id, "admin@example.com") == "owner"


def test_both_email_change_messages_are_handed_to_the_queue_at_commit(app, db, session):
    """Two emails in one transaction: each queue_email releases a SAVEPOINT, and the outbox
    fast path must wait for the real commit (it used to drain mid-transaction, block on the
    request's own write lock for the busy timeout, and leave the first email for the sweeper)."""
    import time

    from batchrouter.models import OutboxMessage

    make_user(session)
    client = console(app)
    token = get_csrf(client, "/account")
    started = time.monotonic()
    client.post("/account/email", data={"new_email": "new@example.com",
                                        "current_password": PASSWORD, "csrf_token": token})
    assert time.monotonic() - started < 5
    rows = session.scalars(select(OutboxMessage)).all()
    assert len(rows) == 2 and all(r.enqueued_at is not None for r in rows)


def test_reading_pages_notes_the_session_as_seen_at_most_once_a_minute(app, db, session):
    from datetime import timedelta

    from sqlalchemy import update

    from batchrouter.db import utcnow

    make_user(session)
    me = console(app)
    [sid] = read_sessions(db)

    def last_seen():
        return next(r.last_seen_at for r in read_sessions(db, full=True) if r.id == sid)

    recent = last_seen()
    assert signed_in(me) and last_seen() == recent  # within the minute: no write
    long_ago = utcnow() - timedelta(minutes=5)
    session.execute(update(UserSession).where(UserSession.id == sid)
                    .values(last_seen_at=long_ago))
    session.commit()
    assert signed_in(me) and last_seen() > long_ago + timedelta(minutes=4)


def test_a_session_whose_workspace_membership_vanished_moves_to_another(app, db, session):
    """teams.py moves sessions on when a member leaves or is removed; a membership deleted
    behind its back must still never be shown."""
    from batchrouter import accounts
    from batchrouter.models import Membership
    from tests.factories import workspace_of

    user = make_user(session)
    first = workspace_of(session, user)
    session.rollback()  # end the read: the sign-in below writes
    me = console(app)
    other = accounts.create_workspace(session, user, "Second", accounts.Settings(
        secret="x", base_url="http://localhost", starter_credits=0))
    session.commit()
    session.query(Membership).filter_by(user_id=user.id, workspace_id=first).delete()
    session.commit()
    assert "Second" in html(me.get("/team"))
    assert [r.workspace_id for r in read_sessions(db, full=True)] == [other.id]


def read_sessions(db, full=False):
    from tests.factories import read

    return read(db, lambda s: list(s.scalars(
        select(UserSession) if full else select(UserSession.id))))
