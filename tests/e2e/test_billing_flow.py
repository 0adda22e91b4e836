"""In real Chromium: Buy credits → the (stub) Stripe Checkout page → pay → back on the
success page, which polls → the signed webhook lands → the credits appear, once."""
import pytest
import requests
from playwright.sync_api import Page, expect

from tests.billing.stripe_stub import WEBHOOK_SECRET, StripeStub, event, signed
from tests.factories import PASSWORD, make_user

pytestmark = pytest.mark.e2e


@pytest.fixture
def stripe_stub():
    stub = StripeStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def app_overrides(stripe_stub):
    return {"STRIPE_SECRET_KEY": "sk_test_stub", "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": stripe_stub.url}


def test_buy_credits_through_checkout(live_server, stripe_stub, page: Page):
    with live_server.app.extensions["batchrouter"].db.session() as s:
        make_user(s, "payer@example.com")
    page.goto(live_server.url + "/login")
    page.get_by_label("Email").fill("payer@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Billing").click()
    expect(page.get_by_test_id("billing-available")).to_have_text("$5.00")
    page.get_by_role("button", name="Buy $50.00 of credits").click()
    # The browser left for the checkout page (CSP form-action allowed the redirect).
    expect(page.get_by_role("heading", name="Pay $50.00")).to_be_visible()
    assert page.url.startswith(stripe_stub.url + "/pay/cs_test_")
    sid = page.url.rsplit("/", 1)[1]
    page.get_by_role("link", name="Pay").click()
    expect(page.get_by_test_id("purchase-message")).to_contain_text(
        "Payment received, credits arriving")
    expect(page.get_by_test_id("purchase-status")).to_have_text("open")
    body, headers = signed(event("checkout.session.completed", stripe_stub.public(sid)))
    for _ in range(2):  # Stripe may deliver twice
        assert requests.post(live_server.url + "/webhooks/stripe", data=body, headers=headers,
                             timeout=10).status_code == 200
    # No reload: the status region polls itself until the grant shows.
    expect(page.get_by_test_id("purchase-status")).to_have_text("granted", timeout=15_000)
    expect(page.get_by_test_id("purchase-available")).to_have_text("$55.00")
    page.get_by_role("link", name="Back to billing").click()
    expect(page.get_by_test_id("billing-available")).to_have_text("$55.00")
    expect(page.get_by_test_id("purchase-row")).to_have_count(1)
