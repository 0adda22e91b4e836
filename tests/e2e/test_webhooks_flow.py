"""In real Chromium: add a webhook endpoint (secret shown once), send a test event, see the
attempt in the delivery log, and redeliver it; the receiver verifies both with the secret."""
import re

import pytest
from playwright.sync_api import Page, expect
from standardwebhooks import Webhook

from batchrouter import accounts
from tests.conftest import run_burst
from tests.stubs import StubServer

pytestmark = pytest.mark.e2e

PASSWORD = "a long enough passphrase"


@pytest.fixture
def app_overrides():
    return {"WEBHOOKS_ALLOW_PRIVATE_TARGETS": True}


@pytest.fixture
def receiver():
    stub = StubServer()
    stub.route("POST", "/hook", lambda req: (200, {"received": True}))
    stub.start()
    yield stub
    stub.stop()


def test_add_endpoint_send_test_and_redeliver(live_server, page: Page, receiver):
    db = live_server.app.extensions["batchrouter"].db
    with db.session() as s:
        accounts.create_user(s, "owner@example.com", PASSWORD,
                             accounts.Settings(secret="test-secret", base_url=live_server.url),
                             verified=True, workspace_name="Acme")
    page.goto(live_server.url + "/login")
    page.get_by_label("Email").fill("owner@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    page.get_by_role("link", name="Webhooks").click()
    page.get_by_label("Endpoint URL").fill(receiver.url + "/hook")
    page.get_by_role("button", name="Add endpoint").click()  # htmx swaps the region
    secret = page.get_by_test_id("webhook-secret").inner_text()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/=]{44}", secret)

    page.get_by_role("link", name="Delivery log").click()
    page.get_by_role("button", name="Send test event").click()
    expect(page.get_by_text("Test event queued")).to_be_visible()
    run_burst(live_server.app)
    page.reload()
    row = page.locator("tr[data-delivery]").first
    expect(row).to_contain_text("webhook.test")
    expect(row).to_contain_text("succeeded")
    row.get_by_text("1 attempt").click()
    expect(row).to_contain_text("received")

    row.get_by_role("button", name=re.compile("Redeliver")).click()
    expect(page.get_by_text("Redelivery queued")).to_be_visible()
    run_burst(live_server.app)
    page.reload()
    expect(page.locator("tr[data-delivery]")).to_have_count(2)
    page.get_by_label("Status").select_option("succeeded")  # htmx filter
    expect(page.locator("tr[data-delivery]")).to_have_count(2)

    got = receiver.received("POST", "/hook")
    assert len(got) == 2 and got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
    for request in got:
        Webhook(secret).verify(request.body, request.headers)
