"""Signing secrets are sealed at rest (a database dump does not reveal them), still sign every
delivery, survive from before sealing existed, and are never sent unsigned when unreadable."""
import pytest
from sqlalchemy import select, update
from standardwebhooks import Webhook

from batchrouter.models import WebhookEndpoint
from batchrouter.webhooks import endpoints
from tests.factories import bearer, read
from tests.webhooks.conftest import deliveries
from tests.webhooks.test_delivery import HOOK, attempts, register, send_test

pytestmark = pytest.mark.pg


def stored(db) -> WebhookEndpoint:
    return read(db, lambda s: s.scalars(select(WebhookEndpoint)).one())


def test_a_secret_is_stored_sealed_and_still_signs(app, client, db, worker, owner, receiver):
    shown = register(client, owner, receiver.url + "/hook")["secret"]
    row = stored(db)
    assert row.secret.startswith(endpoints.SEALED) and shown not in row.secret
    assert row.secret_hint == shown[-4:]
    assert client.get(HOOK, headers=bearer(owner["secret"])).get_json()["secret_hint"] == \
        "…" + shown[-4:]
    rotated = client.post(HOOK + "/rotate-secret", json={"overlap_seconds": 60},
                          headers=bearer(owner["secret"])).get_json()["secret"]
    row = stored(db)
    assert shown not in row.previous_secret and rotated not in row.secret
    send_test(client, owner)
    worker()
    [got] = receiver.received("POST", "/hook")
    for secret in (shown, rotated):
        Webhook(secret).verify(got.body, got.headers)


def test_a_secret_written_before_sealing_still_signs_and_is_sealed_at_rotation(
        app, client, db, worker, owner, receiver):
    register(client, owner, receiver.url + "/hook")
    legacy = endpoints.generate_secret()
    with db.session() as s:  # what migration 0011 leaves: the secret in clear, no prefix
        s.execute(update(WebhookEndpoint).values(secret=legacy, secret_hint=legacy[-4:]))
    send_test(client, owner)
    worker()
    [got] = receiver.received("POST", "/hook")
    Webhook(legacy).verify(got.body, got.headers)
    client.post(HOOK + "/rotate-secret", json={"overlap_seconds": 60},
                headers=bearer(owner["secret"]))
    assert stored(db).previous_secret.startswith(endpoints.SEALED)


def test_a_secret_sealed_under_another_secret_key_is_never_sent_unsigned(
        app, client, db, worker, owner, receiver):
    register(client, owner, receiver.url + "/hook")
    with db.session() as s:
        s.execute(update(WebhookEndpoint).values(
            secret=endpoints.seal("some-other-secret-key", endpoints.generate_secret())))
    send_test(client, owner)
    worker()
    assert receiver.received("POST", "/hook") == []
    [d] = deliveries(db)
    [attempt] = attempts(db, d.id)
    assert d.status == "pending" and "SECRET_KEY changed" in attempt.error
