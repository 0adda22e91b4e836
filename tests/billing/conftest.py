import pytest

from tests.billing.stripe_stub import WEBHOOK_SECRET, StripeStub


@pytest.fixture
def stripe_stub():
    stub = StripeStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def app_overrides(stripe_stub, tmp_path):
    return {"STRIPE_SECRET_KEY": "sk_test_stub", "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": stripe_stub.url,
            # batches run to the end in one worker burst
            "BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage"),
            "BATCHROUTER_SANDBOX_BATCH_DELAY": 0.0, "BATCHROUTER_POLL_INTERVAL": 0.0}
