"""A newcomer in real Chromium: sign up → verify from the outbox → sign in → create a key →
call /v1/auth/account with it."""
import re

import pytest
import requests
from playwright.sync_api import Page, expect
from sqlalchemy import select

from batchrouter.models import EmailMessage

pytestmark = pytest.mark.e2e


def verification_link(live_server) -> str:
    db = live_server.app.extensions["batchrouter"].db
    with db.session() as s:
        message = s.scalars(select(EmailMessage)
                            .where(EmailMessage.template == "verify_email")).one()
        return re.search(r"http://\S+/verify-email/\S+", message.text).group(0)


def test_newcomer_signs_up_verifies_creates_a_key_and_calls_the_api(live_server, page: Page):
    page.goto(live_server.url + "/signup")
    page.get_by_label("Email").fill("newcomer@example.com")
    page.get_by_label("Password").fill("a long enough passphrase")
    page.get_by_label("Workspace name").fill("Newcomer Labs")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()

    page.goto(verification_link(live_server))
    expect(page.get_by_text("Your email address is verified.")).to_be_visible()

    page.get_by_label("Email").fill("newcomer@example.com")
    page.get_by_label("Password").fill("a long enough passphrase")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Newcomer Labs")).to_be_visible()
    expect(page.get_by_test_id("balance")).to_have_text("$5.00")

    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("first key")
    page.get_by_role("button", name="Create key").click()  # htmx swaps the keys region
    secret_box = page.get_by_test_id("new-secret")
    expect(secret_box).to_be_visible()
    secret = secret_box.inner_text().strip()
    assert secret.startswith("br_live_")
    expect(page.get_by_role("cell", name="first key", exact=True)).to_be_visible()

    response = requests.get(live_server.url + "/v1/auth/account",
                            headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["workspace"]["name"] == "Newcomer Labs"
    assert body["user"]["email"] == "newcomer@example.com" and body["role"] == "owner"
    assert body["credit_balance"] == "5.000000"

    page.reload()  # the secret is shown once only
    expect(page.get_by_test_id("new-secret")).to_have_count(0)


def test_pages_read_without_javascript(live_server, browser):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(live_server.url + "/login")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Email").fill("nobody@example.com")
    page.get_by_label("Password").fill("whatever it is")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Invalid email or password.")).to_be_visible()
    context.close()
