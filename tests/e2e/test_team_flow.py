"""Two people in real Chromium: the owner invites a teammate from the Team page → the teammate
opens the emailed link in a second browser context and creates an account → the teammate sees
the workspace, and the owner sees the teammate."""
import re

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from batchrouter import accounts
from batchrouter.models import EmailMessage

pytestmark = pytest.mark.e2e

PASSWORD = "a long enough passphrase"


def make_owner(live_server) -> None:
    db = live_server.app.extensions["batchrouter"].db
    settings = accounts.Settings(secret="test-secret", base_url=live_server.url)
    with db.session() as s:
        accounts.create_user(s, "owner@example.com", PASSWORD, settings, verified=True,
                             workspace_name="Acme Research")


def invitation_link(live_server, to: str) -> str:
    db = live_server.app.extensions["batchrouter"].db
    with db.session() as s:
        message = s.scalars(select(EmailMessage).where(EmailMessage.template == "invitation",
                                                       EmailMessage.to == to)).one()
        return re.search(r"http://\S+/invitations/\S+", message.text).group(0)


def sign_in(page: Page, url: str, email: str) -> None:
    page.goto(url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_owner_invites_a_teammate_who_joins_from_a_second_browser(live_server, page: Page,
                                                                  browser):
    make_owner(live_server)
    sign_in(page, live_server.url, "owner@example.com")
    expect(page.get_by_role("heading", name="Acme Research")).to_be_visible()

    page.get_by_role("link", name="Team").click()
    page.get_by_label("Email").fill("teammate@example.com")
    page.get_by_label("Role", exact=True).select_option("admin")
    page.get_by_role("button", name="Send invitation").click()  # htmx swaps the members region
    expect(page.get_by_text("Invitation sent to teammate@example.com.")).to_be_visible()
    expect(page.get_by_test_id("invitation-row")).to_contain_text("teammate@example.com")

    link = invitation_link(live_server, "teammate@example.com")
    teammate_context = browser.new_context()
    teammate = teammate_context.new_page()
    teammate.goto(link)
    expect(teammate.get_by_role("heading", name="Join Acme Research")).to_be_visible()
    teammate.get_by_label("Your name").fill("Tess")
    teammate.get_by_label("Password").fill(PASSWORD)
    teammate.get_by_role("button", name="Create account and join").click()

    expect(teammate.get_by_text("Welcome to Acme Research.")).to_be_visible()
    expect(teammate.get_by_role("heading", name="Acme Research")).to_be_visible()
    teammate.get_by_role("link", name="Team").click()
    rows = teammate.get_by_test_id("member-row")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="teammate@example.com")).to_contain_text("you")
    expect(teammate.get_by_role("link", name="API keys")).to_be_visible()  # an admin there

    # The link is spent: opening it again says so.
    teammate.goto(link)
    expect(teammate.get_by_text("This invitation has already been used.")).to_be_visible()
    teammate_context.close()

    page.reload()
    expect(page.get_by_test_id("member-row").filter(has_text="teammate@example.com")) \
        .to_be_visible()
    expect(page.get_by_test_id("invitation-row")).to_have_count(0)
