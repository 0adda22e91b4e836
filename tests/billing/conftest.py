import pytest

from tests.billing.stripe_stub import WEBHOOK_SECRET, StripeStub


@pytest.fixture
def stripe_stub():
    stub = StripeStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def app_overrides(stripe_stub):
    return {"STRIPE_SECRET_KEY": "sk_test_stub", "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": stripe_stub.url}
