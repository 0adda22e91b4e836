"""Console pages after sign-in: who may open what, htmx fragments, the account page and the
API keys page (SPEC §2, §9; DESIGN §4), driven the way a user drives them."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests.factories import (
    HX_CSRF_RE,
    PASSWORD,
    add_member,
    bearer,
    get_csrf,
    login,
    make_key,
    make_user,
    post_form,
    workspace_of,
)

HX = {"HX-Request": "true"}
SECRET_RE = re.compile(r"br_(?:live|test)_[0-9A-Za-z]{49}")
NEW_PASSWORD = "a brand new passphrase"


def html(response) -> str:
    return response.get_data(as_text=True)


def bounced_to_login(response) -> bool:
    return response.status_code in (302, 303) and \
        urlsplit(response.headers["Location"]).path == "/login"


def signed_in(client) -> bool:
    response = client.get("/")
    if response.status_code == 200:
        assert "Available credit" in html(response)
        return True
    assert bounced_to_login(response)
    return False


def vary(response) -> set[str]:
    return {v.strip().lower() for v in response.headers.get("Vary", "").split(",") if v.strip()}


def create_key(client, name="nightly-eval", mode="live", **extra):
    """Fill in and submit the create-key form on /api-keys."""
    return post_form(client, "/api-keys", {"name": name, "mode": mode, "expires": "never",
                                           **extra})


def revoke_action(page_html: str, name: str) -> str:
    """The revoke form's action in the row of the key called `name`."""
    for row in re.findall(r"<tr>(.*?)</tr>", page_html, re.DOTALL):
        if f"<td>{name}</td>" in row:
            match = re.search(r'action="(/api-keys/[^"]+/revoke)"', row)
            assert match, row
            return match.group(1)
    raise AssertionError(f"no key row named {name!r}")


@pytest.fixture
def owner(session):
    return make_user(session)


@pytest.fixture
def owner_client(client, owner):
    login(client)
    return client


# --- who can open which page ------------------------------------------------------------------

@pytest.mark.parametrize("path, marks", [
    ("/", ("<h1>owner&#39;s workspace</h1>", "Available credit", "$5.00")),
    ("/account", ("<h1>Account</h1>", "owner@example.com", "Change password",
                  "Active sessions", "Recent activity")),
    ("/account/activity", ("<h1>Account</h1>", "Recent activity")),
    ("/api-keys", ("<h1>API keys</h1>", "Create a key", "No active keys yet.")),
])
def test_console_pages_render_for_the_owner(owner_client, path, marks):
    response = owner_client.get(path)
    assert response.status_code == 200
    body = html(response)
    for mark in marks:
        assert mark in body
    assert "Sign out" in body


@pytest.mark.parametrize("path", ["/", "/billing"])
def test_reading_pages_create_no_ledger_accounts(owner_client, path):
    """GETs run in deferred SQLite transactions: a write there (a lazily created "spent"
    account) fails with "database is locked" whenever a worker holds the write lock."""
    from sqlalchemy import event

    engine = owner_client.application.extensions["batchrouter"].db.engine
    writes = []

    def spy(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("INSERT INTO LEDGER"):
            writes.append(statement)

    event.listen(engine, "before_cursor_execute", spy)
    try:
        assert owner_client.get(path).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", spy)
    assert writes == []


@pytest.mark.parametrize("path, marks", [
    ("/operator/system", ("<h1>Operator</h1>", "Live workers", "Queue “default”")),
    ("/operator/emails", ("<h1>Emails</h1>", "Recipient")),
    ("/operator/errors", ("<h1>Error lookup</h1>", "Error reference")),
])
def test_operator_pages_render_for_an_operator(client, session, path, marks):
    make_user(session, "ops@example.com", operator=True)
    login(client, "ops@example.com")
    response = client.get(path)
    assert response.status_code == 200
    for mark in marks:
        assert mark in html(response)


def test_operator_emails_page_shows_sent_mail(client, session):
    make_user(session, "ops@example.com", operator=True)
    post_form(client, "/signup", {"email": "newbie@example.com", "password": PASSWORD})
    login(client, "ops@example.com")
    body = html(client.get("/operator/emails"))
    assert "Verify your BatchRouter email address" in body
    assert "To newbie@example.com" in body
    assert "/verify-email/" in body
    filtered = html(client.get("/operator/emails", query_string={"to": "ops@example.com"}))
    assert "No emails." in filtered


def test_operator_error_lookup_reports_an_unknown_reference(client, session):
    make_user(session, "ops@example.com", operator=True)
    login(client, "ops@example.com")
    response = client.get("/operator/errors", query_string={"ref": "err_nothing"})
    assert response.status_code == 200
    assert "No error with reference err_nothing." in html(response)


@pytest.mark.parametrize("path", ["/operator/system", "/operator/emails", "/operator/errors"])
def test_operator_pages_are_forbidden_to_other_users(owner_client, path):
    response = owner_client.get(path)
    body = html(response)
    assert response.status_code == 403
    assert "<html" in body and "Error 403" in body
    assert "Traceback" not in body
    assert 'href="/operator/' not in html(owner_client.get("/"))  # nor does the nav offer them


@pytest.mark.parametrize("path", ["/", "/account", "/account/activity", "/api-keys",
                                  "/operator/system", "/operator/emails", "/operator/errors"])
def test_signed_out_visitors_are_sent_to_sign_in(client, path):
    response = client.get(path)
    assert bounced_to_login(response)


def test_signed_out_post_to_a_console_form_changes_nothing(client, session, owner):
    token = get_csrf(client, "/login")
    response = client.post("/api-keys", data={"name": "sneaky", "csrf_token": token})
    assert bounced_to_login(response)
    login(client)
    assert "sneaky" not in html(client.get("/api-keys"))


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_api_keys_page_is_forbidden_below_admin(client, session, owner, role):
    add_member(session, workspace_of(session, owner), f"{role}@example.com", role)
    login(client, f"{role}@example.com")

    dashboard = client.get("/")
    assert dashboard.status_code == 200
    assert "<h1>owner&#39;s workspace</h1>" in html(dashboard)
    assert f">{role}</span>" in html(dashboard)
    assert 'href="/api-keys"' not in html(dashboard)
    assert client.get("/account").status_code == 200

    page = client.get("/api-keys")
    assert page.status_code == 403
    assert "Traceback" not in html(page)

    token = get_csrf(client, "/account")
    created = client.post("/api-keys", data={"name": "sneaky", "mode": "test",
                                             "csrf_token": token})
    assert created.status_code == 403
    assert SECRET_RE.search(html(created)) is None


def test_admin_member_can_manage_keys(client, session, owner):
    add_member(session, workspace_of(session, owner), "admin@example.com", "admin")
    login(client, "admin@example.com")
    assert client.get("/api-keys").status_code == 200
    assert SECRET_RE.search(html(create_key(client, mode="test")))


# --- htmx: fragment or page -------------------------------------------------------------------

@pytest.mark.parametrize("path, region", [("/account/activity", 'id="activity"'),
                                          ("/api-keys", 'id="keys-region"')])
def test_htmx_request_gets_the_fragment_and_others_the_page(owner_client, path, region):
    fragment = owner_client.get(path, headers=HX)
    page = owner_client.get(path)
    boosted = owner_client.get(path, headers={**HX, "HX-Boosted": "true"})
    restore = owner_client.get(path, headers={**HX, "HX-History-Restore-Request": "true"})

    assert fragment.status_code == page.status_code == boosted.status_code == 200
    assert region in html(fragment)
    assert "<html" not in html(fragment) and "<body" not in html(fragment)
    for full in (page, boosted, restore):
        assert "<html" in html(full) and region in html(full)
        assert 'class="site-header"' in html(full)
    for response in (fragment, page, boosted):
        assert "hx-request" in vary(response)


def test_htmx_key_creation_shows_the_secret_once(owner_client):
    page = html(owner_client.get("/api-keys"))
    token = HX_CSRF_RE.search(page).group(1)

    response = owner_client.post("/api-keys", data={"name": "nightly-eval", "mode": "live",
                                                    "expires": "never"},
                                 headers={**HX, "X-CSRFToken": token})
    body = html(response)
    assert response.status_code == 200
    assert "<html" not in body and body.lstrip().startswith('<div id="keys-region">')
    secrets = SECRET_RE.findall(body)
    assert len(secrets) == 1 and secrets[0].startswith("br_live_")
    secret = secrets[0]
    assert "It is shown <strong>once</strong>" in body
    assert "no-store" in response.headers.get("Cache-Control", "")
    assert "hx-request" in vary(response)

    later_page = html(owner_client.get("/api-keys"))
    later_fragment = html(owner_client.get("/api-keys", headers=HX))
    for later in (later_page, later_fragment):
        assert secret not in later
        assert SECRET_RE.search(later) is None
        assert "<td>nightly-eval</td>" in later
        assert f"{secret[:8]}…{secret[-4:]}" in later  # listed by prefix and last 4 only

    assert owner_client.get("/v1/auth/account", headers=bearer(secret)).status_code == 200


def test_plain_form_key_creation_renders_the_page_with_the_secret(owner_client):
    response = create_key(owner_client, name="ci", mode="test")
    body = html(response)
    assert response.status_code == 200
    assert "<html" in body
    [secret] = SECRET_RE.findall(body)
    assert secret.startswith("br_test_")


# --- account page -----------------------------------------------------------------------------

def test_change_password_with_wrong_current_password_fails(app, owner_client):
    response = post_form(owner_client, "/account/password",
                         {"current_password": "not my password", "new_password": NEW_PASSWORD},
                         page="/account")
    assert response.status_code in (302, 303)
    assert "The current password is not right." in html(owner_client.get("/account"))
    fresh = app.test_client()
    assert fresh.post("/login", data={"email": "owner@example.com", "password": NEW_PASSWORD,
                                      "csrf_token": get_csrf(fresh)}).status_code == 401
    login(app.test_client(), password=PASSWORD)


def test_change_password_with_a_weak_new_password_fails(app, owner_client):
    post_form(owner_client, "/account/password",
              {"current_password": PASSWORD, "new_password": "short"}, page="/account")
    assert "Use at least 8 characters." in html(owner_client.get("/account"))
    login(app.test_client(), password=PASSWORD)


def test_change_password_signs_out_other_sessions_but_not_this_one(app, owner_client):
    other = app.test_client()
    login(other)
    assert signed_in(other)

    response = post_form(owner_client, "/account/password",
                         {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                         page="/account")
    assert response.status_code in (302, 303)
    page = owner_client.get("/account")
    assert page.status_code == 200
    assert "Password changed. Your other sessions were signed out." in html(page)
    assert "Password changed" in html(owner_client.get("/account/activity", headers=HX))

    assert not signed_in(other)
    assert signed_in(owner_client)
    fresh = app.test_client()
    assert fresh.post("/login", data={"email": "owner@example.com", "password": PASSWORD,
                                      "csrf_token": get_csrf(fresh)}).status_code == 401
    login(app.test_client(), password=NEW_PASSWORD)


def test_sign_out_other_sessions(app, owner_client):
    others = [app.test_client(), app.test_client()]
    for other in others:
        login(other)
    assert "this session" in html(owner_client.get("/account"))
    assert html(owner_client.get("/account")).count("Werkzeug") >= 3  # three sessions listed

    response = post_form(owner_client, "/account/sessions/revoke-others", {}, page="/account")
    assert response.status_code in (302, 303)
    page = html(owner_client.get("/account"))
    assert "Signed out 2 other sessions." in page
    assert page.count("Werkzeug") == 1

    for other in others:
        assert not signed_in(other)
    assert signed_in(owner_client)


def test_recent_activity_lists_sign_in_and_key_creation(owner_client):
    create_key(owner_client, name="nightly-eval")
    activity = html(owner_client.get("/account/activity", headers=HX))
    assert "Signed in" in activity
    assert "API key created — nightly-eval" in activity
    assert SECRET_RE.search(activity) is None
    assert activity.index("API key created") < activity.index("Signed in")  # newest first
    assert "API key created — nightly-eval" in html(owner_client.get("/account"))


# --- API keys page ----------------------------------------------------------------------------

def test_unverified_user_can_create_test_keys_but_not_live_ones(client, session):
    make_user(session, verified=False)
    login(client)
    page = html(client.get("/api-keys"))
    assert "Verify <strong>owner@example.com</strong> to create live API keys" in page

    refused = create_key(client, name="prod", mode="live")
    body = html(refused)
    assert refused.status_code == 422
    assert "Verify your email address before creating live keys" in body
    assert SECRET_RE.search(body) is None
    assert "<td>prod</td>" not in body

    created = create_key(client, name="sandbox", mode="test")
    assert created.status_code == 200
    [secret] = SECRET_RE.findall(html(created))
    assert secret.startswith("br_test_")
    assert "<td>sandbox</td>" in html(client.get("/api-keys"))


def test_revoking_a_key_removes_it_and_stops_it_working(owner_client):
    [secret] = SECRET_RE.findall(html(create_key(owner_client, name="to-revoke")))
    create_key(owner_client, name="keeper")
    assert owner_client.get("/v1/auth/account", headers=bearer(secret)).status_code == 200

    page = html(owner_client.get("/api-keys"))
    action = revoke_action(page, "to-revoke")
    response = post_form(owner_client, action, {}, page="/api-keys")
    assert response.status_code in (302, 303)
    assert urlsplit(response.headers["Location"]).path == "/api-keys"

    after = html(owner_client.get("/api-keys"))
    assert "Key “to-revoke” revoked." in after
    assert "<td>to-revoke</td>" not in after
    assert "<td>keeper</td>" in after
    assert owner_client.get("/v1/auth/account", headers=bearer(secret)).status_code == 401
    assert "API key revoked — to-revoke" in html(owner_client.get("/account/activity"))


def test_cannot_revoke_another_workspaces_key(client, session, owner):
    key, secret = make_key(session, owner)
    make_user(session, "stranger@example.com")
    login(client, "stranger@example.com")
    response = post_form(client, f"/api-keys/{key.id}/revoke", {}, page="/api-keys")
    assert response.status_code == 404
    assert "Traceback" not in html(response)
    assert client.get("/v1/auth/account", headers=bearer(secret)).status_code == 200


def test_verifying_the_email_unlocks_live_keys(client, session):
    from sqlalchemy import select

    from batchrouter.models import EmailMessage

    post_form(client, "/signup", {"email": "new@example.com", "password": PASSWORD})
    login(client, "new@example.com")
    assert create_key(client, name="prod", mode="live").status_code == 422

    session.rollback()  # end the snapshot read transaction (SQLite WAL) before reading
    message = session.scalars(select(EmailMessage)
                              .where(EmailMessage.template == "verify_email")).one()
    link = re.search(r"https?://[^/\s]+(/verify-email/\S+)", message.text).group(1)
    response = client.get(link)
    assert response.status_code in (302, 303)
    assert urlsplit(response.headers["Location"]).path == "/"  # already signed in
    dashboard = html(client.get("/"))
    assert "Your email address is verified." in dashboard
    assert "<h1>new&#39;s workspace</h1>" in dashboard
    assert "$5.00" in dashboard  # starter credits
    assert "to create live API keys" not in dashboard

    created = create_key(client, name="prod", mode="live")
    assert created.status_code == 200
    [secret] = SECRET_RE.findall(html(created))
    assert secret.startswith("br_live_")


def test_htmx_post_after_being_signed_out_elsewhere_redirects_the_page(app, owner_client):
    """DESIGN §4: an htmx POST is answered with HX-Redirect, never a 302 that htmx would follow
    and swap the whole sign-in page into #keys-region."""
    token = HX_CSRF_RE.search(html(owner_client.get("/api-keys"))).group(1)
    other = app.test_client()
    login(other)
    post_form(other, "/account/sessions/revoke-others", {}, page="/account")

    response = owner_client.post("/api-keys", data={"name": "late", "mode": "live"},
                                 headers={**HX, "X-CSRFToken": token})
    assert response.status_code not in (301, 302, 303, 307, 308)
    assert urlsplit(response.headers.get("HX-Redirect", "")).path == "/login"
    assert "late" not in html(other.get("/api-keys"))
