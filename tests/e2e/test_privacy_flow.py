"""Privacy promises in real Chromium (SPEC §10): the cookie banner and Cookie settings, with
and without JavaScript; analytics only after consent; the cookie policy against the cookies
the app really sets; a privacy request from the form to an export ZIP, and a deletion."""
import json
import re
import zipfile

import pytest
import requests
from playwright.sync_api import Page, expect
from sqlalchemy import func, select

from batchrouter import accounts
from batchrouter.models import AnalyticsPageView, EmailMessage, LedgerEntry, PrivacyRequest
from tests.conftest import run_burst

pytestmark = pytest.mark.e2e

PASSWORD = "a long enough passphrase"


def db_of(live_server):
    return live_server.app.extensions["batchrouter"].db


def make_user(live_server, email="owner@example.com", *, operator=False) -> None:
    settings = accounts.Settings(secret="test-secret", base_url=live_server.url,
                                 starter_credits=5_000_000)
    with db_of(live_server).session() as s:
        accounts.create_user(s, email, PASSWORD, settings, verified=True, operator=operator,
                             workspace_name="Acme Research")


def sign_in(page: Page, url: str, email: str) -> None:
    page.goto(url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def analytics_rows(live_server) -> int:
    with db_of(live_server).session() as s:
        return s.scalar(select(func.count()).select_from(AnalyticsPageView))


def cookie_names(context) -> set[str]:
    return {c["name"] for c in context.cookies()}


def browse(page: Page, url: str) -> None:
    for path in ("/models", "/docs", "/privacy", "/terms"):
        page.goto(url + path)


def test_banner_buttons_are_equal_and_nothing_is_counted_without_consent(live_server,
                                                                         page: Page):
    page.goto(live_server.url + "/models")
    banner = page.get_by_test_id("cookie-banner")
    expect(banner).to_be_visible()
    accept = banner.get_by_role("button", name="Accept all")
    reject = banner.get_by_role("button", name="Reject all")
    a, r = accept.bounding_box(), reject.bounding_box()
    assert (round(a["width"]), round(a["height"])) == (round(r["width"]), round(r["height"]))
    style = "e => [getComputedStyle(e).fontWeight, getComputedStyle(e).fontSize, " \
            "getComputedStyle(e).backgroundColor, getComputedStyle(e).color]"
    assert accept.evaluate(style) == reject.evaluate(style)
    banner.get_by_text("Customize").click()
    expect(page.get_by_label("Essential")).to_be_checked()
    expect(page.get_by_label("Essential")).to_be_disabled()
    expect(page.get_by_label("Analytics")).not_to_be_checked()

    browse(page, live_server.url)  # no click at all
    assert "br_analytics" not in cookie_names(page.context)
    assert analytics_rows(live_server) == 0
    expect(page.get_by_test_id("cookie-banner")).to_be_visible()

    page.get_by_test_id("cookie-banner").get_by_role("button", name="Reject all").click()
    expect(page.get_by_test_id("cookie-saved")).to_be_visible()  # htmx swapped it in place
    browse(page, live_server.url)
    expect(page.get_by_test_id("cookie-banner")).to_have_count(0)
    assert "br_analytics" not in cookie_names(page.context)
    assert analytics_rows(live_server) == 0


def test_accept_counts_views_and_cookie_settings_withdraws(live_server, page: Page):
    page.goto(live_server.url + "/models")
    page.get_by_role("button", name="Accept all").click()
    expect(page.get_by_test_id("cookie-saved")).to_be_visible()
    assert "br_analytics" in cookie_names(page.context)
    browse(page, live_server.url)
    assert analytics_rows(live_server) >= 4

    page.get_by_test_id("cookie-settings-link").click()
    expect(page.get_by_role("heading", name="Cookie settings")).to_be_visible()
    expect(page.get_by_test_id("consent-current")).to_contain_text("essential and analytics")
    expect(page.get_by_label("Analytics")).to_be_checked()
    page.get_by_label("Analytics").uncheck()
    page.get_by_role("button", name="Save choices").click()
    expect(page.get_by_test_id("consent-current")).to_contain_text("essential only")
    assert "br_analytics" not in cookie_names(page.context)  # deleted at once
    assert analytics_rows(live_server) == 0
    browse(page, live_server.url)
    assert analytics_rows(live_server) == 0
    expect(page.get_by_test_id("consent-history")).to_have_count(0)  # on another page now
    page.goto(live_server.url + "/cookies/settings")
    expect(page.get_by_test_id("consent-history")).to_contain_text("withdraw")


def test_banner_works_without_javascript(live_server, browser):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(live_server.url + "/docs")
    page.get_by_role("button", name="Reject all").click()
    expect(page.get_by_text("Your cookie choice is saved: essential cookies only.")).to_be_visible()
    assert page.url.endswith("/docs")
    expect(page.get_by_test_id("cookie-banner")).to_have_count(0)
    page.goto(live_server.url + "/cookies/settings")
    page.get_by_label("Analytics").check()
    page.get_by_role("button", name="Save choices").click()
    assert "br_analytics" in cookie_names(context)
    context.close()


def test_cookie_policy_lists_exactly_the_cookies_the_app_sets(live_server, page: Page):
    make_user(live_server)
    page.goto(live_server.url + "/models")
    page.get_by_role("button", name="Accept all").click()
    expect(page.get_by_test_id("cookie-saved")).to_be_visible()
    sign_in(page, live_server.url, "owner@example.com")
    expect(page.get_by_role("heading", name="Acme Research")).to_be_visible()
    for link in ("Batches", "API keys", "Team", "Account"):
        page.get_by_role("link", name=link, exact=True).first.click()
    page.goto(live_server.url + "/account/privacy")
    set_by_app = cookie_names(page.context)
    page.goto(live_server.url + "/cookies")
    listed = set(page.locator("[data-testid=policy-cookies] table tbody tr td:first-child")
                 .all_inner_texts())
    assert set_by_app == listed, (set_by_app, listed)
    page.get_by_role("button", name="Sign out").click()
    assert cookie_names(page.context) <= listed


def confirmation_link(live_server, to: str) -> str:
    with db_of(live_server).session() as s:
        text = s.scalars(select(EmailMessage.text).where(
            EmailMessage.template == "privacy_confirm", EmailMessage.to == to)).one()
    return re.search(r"http://\S+/privacy/request/confirm/\S+", text).group(0)


def request_and_confirm(page: Page, live_server, kind_label: str) -> PrivacyRequest:
    page.goto(live_server.url + "/privacy/request")
    page.get_by_label("What would you like us to do?").select_option(label=kind_label)
    page.get_by_label("Account email").fill("owner@example.com")
    page.get_by_label("Workspace name").fill("Acme Research")
    page.get_by_role("button", name="Send request").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    page.goto(confirmation_link(live_server, "owner@example.com"))
    page.get_by_role("button", name="Confirm request").click()
    expect(page.get_by_role("heading", name="Request confirmed")).to_be_visible()
    with db_of(live_server).session() as s:
        return s.scalars(select(PrivacyRequest).order_by(PrivacyRequest.created_at.desc())).first()


def test_export_request_from_form_to_zip(live_server, page: Page, browser):
    make_user(live_server)
    make_user(live_server, "op@example.com", operator=True)
    found = request_and_confirm(page, live_server, "Export of my data")

    operator = browser.new_context().new_page()
    sign_in(operator, live_server.url, "op@example.com")
    operator.goto(live_server.url + "/operator/privacy")
    row = operator.get_by_test_id("privacy-row").filter(has_text=found.id)
    expect(row.get_by_test_id("due")).to_contain_text(found.due_at.strftime("%Y-%m-%d"))
    row.get_by_role("link", name=found.id).click()
    operator.get_by_role("button", name="Build export").click()
    expect(operator.get_by_test_id("privacy-status")).to_have_text("in progress")
    run_burst(live_server.app)
    operator.reload()
    expect(operator.get_by_test_id("privacy-status")).to_have_text("done")

    with db_of(live_server).session() as s:
        text = s.scalars(select(EmailMessage.text).where(
            EmailMessage.to == "owner@example.com",
            EmailMessage.subject == "Your privacy request is done")).one()
    url = re.search(r"http://\S+/privacy/export/\S+", text).group(0)
    with page.expect_download() as info:
        page.evaluate("url => { const a = document.createElement('a'); a.href = url; "
                      "a.download = ''; document.body.appendChild(a); a.click(); }", url)
    archive = zipfile.ZipFile(info.value.path())
    assert "README.txt" in archive.namelist()
    account = json.loads(archive.read("account.json"))
    assert account[0]["email"] == "owner@example.com"
    assert json.loads(archive.read("memberships.json"))[0]["role"] == "owner"
    logged = [e["kind"] for e in json.loads(archive.read("security_log.json"))]
    assert "privacy_request_confirmed" in logged
    assert requests.get(url + "x", timeout=10).status_code == 403


def test_deletion_keeps_the_ledger_and_the_user_cannot_sign_in(live_server, page: Page,
                                                               browser):
    make_user(live_server)
    make_user(live_server, "op@example.com", operator=True)
    with db_of(live_server).session() as s:
        entries = s.scalar(select(func.count()).select_from(LedgerEntry))
    found = request_and_confirm(page, live_server, "Deletion of my data")
    operator = browser.new_context().new_page()
    sign_in(operator, live_server.url, "op@example.com")
    operator.goto(f"{live_server.url}/operator/privacy/{found.id}")
    operator.get_by_role("button", name="Delete account data").click()
    expect(operator.get_by_test_id("privacy-status")).to_have_text("done")
    expect(operator.get_by_test_id("kept")).to_contain_text("accounting and tax law")
    with db_of(live_server).session() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == entries
    sign_in(page, live_server.url, "owner@example.com")
    expect(page.get_by_text("Invalid email or password.")).to_be_visible()
