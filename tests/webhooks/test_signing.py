"""Our signatures verify with the standardwebhooks library and with a plain HMAC check."""
import hashlib
import hmac
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from batchrouter.webhooks import sending
from batchrouter.webhooks.endpoints import generate_secret

BODY = '{"id":"evt_1","type":"batch.completed","created":1,"data":{}}'


@pytest.mark.parametrize("secret", [generate_secret(), "plain-customer-secret"])
def test_signature_verifies_with_standardwebhooks_and_plain_hmac(secret):
    headers = sending.sign("evt_1", BODY, [secret], int(time.time()))
    key = secret if secret.startswith("whsec_") else secret.encode()
    assert Webhook(key).verify(BODY, headers)["type"] == "batch.completed"
    expected = hmac.new(secret.encode(), BODY.encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-BatchRouter-Signature"], expected)
    with pytest.raises(WebhookVerificationError):
        Webhook(key).verify(BODY.replace("completed", "failed"), headers)


def test_rotation_overlap_sends_both_signatures():
    old, new = generate_secret(), generate_secret()
    headers = sending.sign("evt_1", BODY, [new, old], int(time.time()))
    for secret in (old, new):
        Webhook(secret).verify(BODY, headers)
        digest = hmac.new(secret.encode(), BODY.encode(), hashlib.sha256).hexdigest()
        assert digest in headers["X-BatchRouter-Signature"].split(" ")
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_retry_after_parsing():
    assert sending.retry_after_seconds("120") == 120
    assert sending.retry_after_seconds(None) is None
    assert sending.retry_after_seconds("soon") is None
    assert 0 <= sending.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") <= 1
