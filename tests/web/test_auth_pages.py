"""Sign-up, sign-in/out, password recovery, CSRF and security headers, through the pages a
visitor uses (SPEC §9, §12; DESIGN §4): GET the page, take its CSRF token, POST the form."""
from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from batchrouter.models import EmailMessage, Membership, User, Workspace
from tests.factories import PASSWORD, get_csrf, login, make_user, post_form

COOKIE = "br_session"  # BASE_URL is http:// in the rig, so no __Host- prefix
NEW_PASSWORD = "a brand new passphrase"
TOKEN_IN_PAGE = re.compile(r'(name="csrf_token" value=|"X-CSRFToken": )"[^"]+"')


def html(response) -> str:
    return response.get_data(as_text=True)


def comparable(response) -> str:
    """The page without its CSRF tokens (they carry a timestamp, nothing about the account)."""
    return TOKEN_IN_PAGE.sub(r'\1"…"', html(response))


def fresh(session):
    """End the test session's read transaction: SQLite (WAL, explicit BEGIN) keeps a snapshot,
    so expire_all() alone would re-read the old one."""
    session.rollback()
    session.expire_all()
    return session


def emails(session, template=None, to=None) -> list[EmailMessage]:
    fresh(session)
    stmt = select(EmailMessage).order_by(EmailMessage.created_at, EmailMessage.id)
    if template:
        stmt = stmt.where(EmailMessage.template == template)
    if to:
        stmt = stmt.where(EmailMessage.to == to)
    return list(session.scalars(stmt))


def link_in(message: EmailMessage, route: str) -> str:
    """The site-relative path of the /<route>/<token> link in an email's text."""
    match = re.search(rf"https?://[^/\s]+(/{route}/[A-Za-z0-9_.\-]+)", message.text)
    assert match, f"no /{route}/ link in: {message.text}"
    return match.group(1)


def signed_in(client) -> bool:
    """What the visitor sees at /: the dashboard (200) or a bounce to the sign-in page."""
    response = client.get("/")
    if response.status_code == 200:
        assert "Available credit" in html(response)
        return True
    assert response.status_code in (302, 303)
    assert urlsplit(response.headers["Location"]).path == "/login"
    return False


def try_login(client, email, password, **extra):
    token = get_csrf(client, "/login")
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": token, **extra})


def session_set_cookie(response) -> str:
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{COOKIE}=")]
    assert cookies, f"no {COOKIE} Set-Cookie in {response.headers.getlist('Set-Cookie')}"
    return cookies[-1]


# --- pages a signed-out visitor can open ------------------------------------------------------

@pytest.mark.parametrize("path, heading, fields", [
    ("/signup", "Create your account", ("email", "password", "workspace_name")),
    ("/login", "Sign in", ("email", "password")),
    ("/forgot-password", "Reset your password", ("email",)),
])
def test_public_auth_pages_render_a_form_with_a_csrf_token(client, path, heading, fields):
    response = client.get(path)
    body = html(response)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert f"<h1>{heading}</h1>" in body
    assert f'action="{path}"' in body
    for field in fields:
        assert f'name="{field}"' in body
    assert re.search(r'name="csrf_token" value="[^"]+"', body)


def test_console_root_sends_signed_out_visitor_to_sign_in(client):
    response = client.get("/")
    assert response.status_code in (302, 303)
    assert urlsplit(response.headers["Location"]).path == "/login"
    assert "Sign in" in html(client.get("/", follow_redirects=True))


# --- sign up and email verification -----------------------------------------------------------

def test_sign_up_creates_account_and_the_emailed_link_verifies_it_once(client, session):
    response = post_form(client, "/signup", {"email": "New.Person@Example.com",
                                             "password": PASSWORD, "name": "Ada",
                                             "workspace_name": "Acme Labs"})
    assert response.status_code == 200
    assert "Check your inbox" in html(response)
    assert "New.Person@Example.com" in html(response)

    fresh(session)
    user = session.scalars(select(User).where(User.email == "new.person@example.com")).one()
    assert not user.is_verified
    membership = session.scalars(select(Membership).where(Membership.user_id == user.id)).one()
    assert membership.role == "owner"
    assert session.get(Workspace, membership.workspace_id).name == "Acme Labs"

    [message] = emails(session, template="verify_email")
    assert message.to == "new.person@example.com"
    link = link_in(message, "verify-email")

    first = client.get(link)
    assert first.status_code in (302, 303)
    assert urlsplit(first.headers["Location"]).path == "/login"
    assert "Your email address is verified." in html(client.get("/login"))
    fresh(session)
    assert session.get(User, user.id).is_verified

    second = client.get(link)
    assert second.status_code == 400
    assert "That link did not work" in html(second)
    assert "already been used" in html(second)
    assert "Traceback" not in html(second)


def test_sign_up_with_a_taken_email_looks_the_same_and_emails_the_owner(client, session):
    data = {"email": "taken@example.com", "password": PASSWORD}
    first = post_form(client, "/signup", data)
    again = post_form(client, "/signup", {**data, "password": "another long password"})

    assert first.status_code == again.status_code == 200
    assert comparable(first) == comparable(again)
    assert "Check your inbox" in html(again)

    fresh(session)
    count = session.scalar(select(func.count()).select_from(User)
                           .where(User.email == "taken@example.com"))
    assert count == 1
    assert session.scalar(select(func.count()).select_from(Workspace)) == 1
    assert len(emails(session, template="verify_email")) == 1
    [notice] = emails(session, template="account_exists")
    assert notice.to == "taken@example.com"
    assert "/forgot-password" in notice.text


def test_sign_up_with_a_short_password_is_refused_with_a_message(client, session):
    response = post_form(client, "/signup", {"email": "weak@example.com", "password": "short1"})
    assert response.status_code == 422
    body = html(response)
    assert "Use at least 8 characters." in body
    assert 'value="weak@example.com"' in body  # the form keeps what was typed
    fresh(session)
    assert session.scalar(select(func.count()).select_from(User)) == 0
    assert emails(session) == []


# --- sign in and out --------------------------------------------------------------------------

def test_wrong_password_and_unknown_email_get_the_same_answer(client, session):
    make_user(session)
    wrong = try_login(client, "owner@example.com", "not the password at all")
    unknown = try_login(client, "nobody@example.com", PASSWORD)

    assert wrong.status_code == unknown.status_code == 401
    for response in (wrong, unknown):
        body = html(response)
        assert '<p class="form-error" role="alert">Invalid email or password.</p>' in body
    assert comparable(wrong).replace("owner@example.com", "X") == \
        comparable(unknown).replace("nobody@example.com", "X")
    assert not signed_in(client)


def test_sign_in_accepts_the_email_as_people_type_it(client, session):
    make_user(session)
    response = try_login(client, "  Owner@Example.COM ", PASSWORD)
    assert response.status_code in (302, 303)
    assert signed_in(client)


def test_sign_in_issues_a_fresh_httponly_lax_cookie_and_redirects(client, session):
    make_user(session)
    client.get("/login")
    before = client.get_cookie(COOKIE)
    assert before is not None  # the form's CSRF token already lives in a session cookie

    response = try_login(client, "owner@example.com", PASSWORD)
    assert response.status_code in (302, 303)
    assert urlsplit(response.headers["Location"]).path == "/"

    set_cookie = session_set_cookie(response)
    assert "HttpOnly" in set_cookie
    assert re.search(r";\s*SameSite=Lax", set_cookie, re.IGNORECASE)
    assert client.get_cookie(COOKIE).value != before.value
    assert signed_in(client)


@pytest.mark.parametrize("target", ["//evil.example", "//evil.example/account",
                                    "https://evil.example/", "/\\evil.example",
                                    "///evil.example"])
def test_sign_in_does_not_follow_next_off_site(client, session, target):
    make_user(session)
    page = client.get("/login", query_string={"next": target})
    assert 'name="next"' in html(page)
    response = try_login(client, "owner@example.com", PASSWORD, next=target)
    assert response.status_code in (302, 303)
    location = urlsplit(response.headers["Location"])
    assert location.netloc in ("", "localhost")
    assert location.path == "/"


def test_sign_in_follows_next_on_site(client, session):
    make_user(session)
    bounce = client.get("/account")
    assert urlsplit(bounce.headers["Location"]).path == "/login"
    response = try_login(client, "owner@example.com", PASSWORD, next="/account")
    assert urlsplit(response.headers["Location"]).path == "/account"


def test_logout_ends_the_session_on_the_server(app, client, session):
    make_user(session)
    login(client)
    stolen = client.get_cookie(COOKIE).value

    copy = app.test_client()
    copy.set_cookie(COOKIE, stolen)
    assert signed_in(copy)  # the copied cookie works while the session lives

    response = post_form(client, "/logout", {}, page="/")
    assert response.status_code in (302, 303)
    assert urlsplit(response.headers["Location"]).path == "/login"
    assert "You are signed out." in html(client.get("/login"))
    assert not signed_in(client)

    replay = app.test_client()
    replay.set_cookie(COOKIE, stolen)
    assert not signed_in(replay)
    assert replay.get("/account").status_code in (302, 303)


# --- sign-in throttling -----------------------------------------------------------------------

@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_LOGIN_LIMIT_ACCOUNT": "3 per minute"}],
                         ids=["3-per-minute"])
def test_fourth_sign_in_attempt_for_one_account_is_throttled(app, client, session):
    make_user(session)
    make_user(session, "other@example.com")
    for _ in range(3):
        assert try_login(client, "owner@example.com", "wrong password here").status_code == 401

    # Even the right password, typed with different case, waits out the limit.
    response = try_login(client, "Owner@Example.com", PASSWORD)
    body = html(response)
    assert response.status_code == 429
    assert "<html" in body and "Too many requests" in body
    assert "Traceback" not in body
    assert int(response.headers["Retry-After"]) > 0
    assert not signed_in(client)

    # The limit is per account: another account on the same IP still signs in.
    assert try_login(app.test_client(), "other@example.com", PASSWORD).status_code in (302, 303)


# --- forgot and reset password ----------------------------------------------------------------

def test_forgot_password_answers_the_same_for_known_and_unknown_emails(client, session):
    make_user(session)
    known = post_form(client, "/forgot-password", {"email": "owner@example.com"})
    unknown = post_form(client, "/forgot-password", {"email": "nobody@example.com"})

    assert known.status_code == unknown.status_code == 200
    assert "If an account exists for that address" in html(known)
    assert comparable(known) == comparable(unknown)

    sent = emails(session, template="reset_password")
    assert [m.to for m in sent] == ["owner@example.com"]
    assert emails(session, to="nobody@example.com") == []


def test_reset_link_works_once_and_signs_everyone_out(app, client, session):
    make_user(session)
    elsewhere = app.test_client()
    login(elsewhere)
    assert signed_in(elsewhere)

    post_form(client, "/forgot-password", {"email": "owner@example.com"})
    [message] = emails(session, template="reset_password")
    link = link_in(message, "reset-password")

    page = client.get(link)
    assert page.status_code == 200
    assert "Choose a new password" in html(page)
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "no-store" in page.headers.get("Cache-Control", "")

    response = post_form(client, link, {"password": NEW_PASSWORD,
                                        "password_confirm": NEW_PASSWORD})
    assert response.status_code in (302, 303)
    assert urlsplit(response.headers["Location"]).path == "/login"
    assert "every session was signed out" in html(client.get("/login"))

    assert not signed_in(client)      # the reset does not sign anyone in
    assert not signed_in(elsewhere)   # and ends the sessions that existed

    assert try_login(app.test_client(), "owner@example.com", PASSWORD).status_code == 401
    assert try_login(app.test_client(), "owner@example.com",
                     NEW_PASSWORD).status_code in (302, 303)

    reused = client.get(link)
    assert reused.status_code == 400
    assert "That link did not work" in html(reused)
    token = get_csrf(client, "/login")
    replay = client.post(link, data={"password": "yet another passphrase",
                                     "password_confirm": "yet another passphrase",
                                     "csrf_token": token})
    assert replay.status_code == 400
    assert try_login(app.test_client(), "owner@example.com",
                     NEW_PASSWORD).status_code in (302, 303)


def test_reset_with_two_different_passwords_is_refused(client, session):
    make_user(session)
    post_form(client, "/forgot-password", {"email": "owner@example.com"})
    link = link_in(emails(session, template="reset_password")[0], "reset-password")
    response = post_form(client, link, {"password": NEW_PASSWORD,
                                        "password_confirm": NEW_PASSWORD + "!"})
    assert response.status_code == 422
    assert "The two passwords differ." in html(response)
    assert client.get(link).status_code == 200  # the link was not used up


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_RESET_TOKEN_TTL": 1,
                                            "BATCHROUTER_VERIFY_TOKEN_TTL": 1}], ids=["ttl-1s"])
def test_expired_emailed_links_are_rejected(app, client, session):
    make_user(session)
    post_form(client, "/forgot-password", {"email": "owner@example.com"})
    post_form(client, "/signup", {"email": "late@example.com", "password": PASSWORD})
    reset = link_in(emails(session, template="reset_password")[0], "reset-password")
    verify = link_in(emails(session, template="verify_email")[0], "verify-email")
    token = get_csrf(client, "/login")
    time.sleep(2.1)

    page = client.get(reset)
    assert page.status_code == 400
    assert "This link has expired." in html(page)
    assert "Ask for a new link" in html(page)
    response = client.post(reset, data={"password": NEW_PASSWORD,
                                        "password_confirm": NEW_PASSWORD, "csrf_token": token})
    assert response.status_code == 400
    assert try_login(app.test_client(), "owner@example.com", PASSWORD).status_code in (302, 303)

    late = client.get(verify)
    assert late.status_code == 400
    assert "This link has expired." in html(late)
    user = fresh(session).scalars(select(User).where(User.email == "late@example.com")).one()
    assert not user.is_verified


@pytest.mark.parametrize("route", ["reset-password", "verify-email"])
def test_forged_link_is_rejected_with_a_friendly_page(client, route):
    response = client.get(f"/{route}/eyJ1aWQiOiJ1c3JfeCJ9.forged.signature")
    assert response.status_code == 400
    assert "That link did not work" in html(response)
    assert "Traceback" not in html(response)


def test_verification_token_does_not_work_as_a_reset_token(client, session):
    post_form(client, "/signup", {"email": "new@example.com", "password": PASSWORD})
    verify = link_in(emails(session, template="verify_email")[0], "verify-email")
    token = verify.rsplit("/", 1)[1]
    response = client.get(f"/reset-password/{token}")
    assert response.status_code == 400
    assert "That link did not work" in html(response)


def test_reset_link_stops_working_once_the_password_is_changed_elsewhere(app, client, session):
    make_user(session)
    post_form(client, "/forgot-password", {"email": "owner@example.com"})
    link = link_in(emails(session, template="reset_password")[0], "reset-password")
    assert client.get(link).status_code == 200

    console = app.test_client()
    login(console)
    post_form(console, "/account/password", {"current_password": PASSWORD,
                                             "new_password": NEW_PASSWORD}, page="/account")
    assert client.get(link).status_code == 400


# --- CSRF -------------------------------------------------------------------------------------

def test_post_without_csrf_token_gets_the_try_again_page(client, session):
    make_user(session)
    client.get("/login")
    response = client.post("/login", data={"email": "owner@example.com", "password": PASSWORD})
    body = html(response)
    assert response.status_code == 400
    assert "Please try again" in body and "nothing was changed" in body
    assert "Traceback" not in body
    assert not signed_in(client)


def test_console_post_without_csrf_token_changes_nothing(app, client, session):
    make_user(session)
    login(client)
    other = app.test_client()
    login(other)

    response = client.post("/account/sessions/revoke-others", data={})
    assert response.status_code == 400
    assert "Please try again" in html(response)
    assert signed_in(other)


def test_cross_site_post_is_refused_even_with_a_token(client, session):
    make_user(session)
    login(client)
    token = get_csrf(client, "/")
    response = client.post("/logout", data={"csrf_token": token},
                           headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 400
    assert "Please try again" in html(response)
    assert signed_in(client)

    same_site = client.post("/logout", data={"csrf_token": token},
                            headers={"Sec-Fetch-Site": "same-origin"})
    assert same_site.status_code in (302, 303)
    assert not signed_in(client)


# --- security headers and error pages ---------------------------------------------------------

@pytest.mark.parametrize("path, status, mimetype", [
    ("/login", 200, "text/html"),
    ("/healthz", 200, "application/json"),
    ("/no-such-page", 404, "text/html"),
    ("/v1/no-such-endpoint", 404, "application/json"),
])
def test_security_headers_on_pages_json_and_errors(client, path, status, mimetype):
    response = client.get(path)
    assert response.status_code == status
    assert response.mimetype == mimetype
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'self'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] in ("no-referrer", "same-origin",
                                                   "strict-origin",
                                                   "strict-origin-when-cross-origin")


def test_missing_page_is_friendly(client):
    response = client.get("/no-such-page")
    body = html(response)
    assert response.status_code == 404
    assert "<html" in body and "Page not found" in body
    assert "Traceback" not in body and "werkzeug" not in body.lower()
    assert 'href="/"' in body  # a way back


def test_missing_api_endpoint_answers_with_the_json_envelope(client):
    response = client.get("/v1/no-such-endpoint")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


@pytest.mark.parametrize("app_overrides", [{"RATELIMIT_DEFAULT": "2 per minute"}],
                         ids=["default-limit"])
def test_a_configured_default_limit_still_applies_to_every_page(app, client):
    """The limiter's per-request hook is dropped only while no such limit is configured."""
    from batchrouter.extensions import limiter

    try:
        assert [client.get("/healthz").status_code for _ in range(3)] == [200, 200, 429]
    finally:  # the Limiter object is shared by every app this test session makes
        limiter.limit_manager.set_default_limits([])
