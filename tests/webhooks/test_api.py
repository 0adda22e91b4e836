"""The webhook API: default endpoint CRUD, the delivery log with filters, redeliver, scopes."""
import pytest

from tests.factories import bearer, make_key, make_user
from tests.webhooks.conftest import deliveries
from tests.webhooks.test_targets import INTERNAL_URLS

HOOK = "/v1/auth/account/delivery-webhook"
LOG = "/v1/webhook-deliveries"


@pytest.mark.parametrize("app_overrides", [{"WEBHOOKS_ALLOW_PRIVATE_TARGETS": False}],
                         indirect=True)
def test_every_internal_form_is_refused_at_registration(client, owner):
    for url in INTERNAL_URLS + ["https://user:pw@hooks.example.com/", "http://hooks.example.com/"]:
        response = client.put(HOOK, json={"url": url}, headers=bearer(owner["secret"]))
        assert response.status_code == 422, url
        assert response.get_json()["error"]["code"] == "webhook_target_refused"
    assert client.get(HOOK, headers=bearer(owner["secret"])).status_code == 404


def test_default_endpoint_lifecycle(client, owner, receiver):
    headers = bearer(owner["secret"])
    assert client.get(HOOK, headers=headers).get_json()["error"]["code"] == \
        "webhook_not_configured"
    created = client.put(HOOK, json={"url": receiver.url + "/hook", "secret": "given-secret-1"},
                         headers=headers)
    assert created.status_code == 201 and created.get_json()["secret"] == "given-secret-1"
    shown = client.get(HOOK, headers=headers).get_json()
    assert "secret" not in shown and shown["secret_hint"] == "…et-1"
    updated = client.put(HOOK, json={"url": receiver.url + "/hook?v=2"}, headers=headers)
    assert updated.status_code == 200 and "secret" not in updated.get_json()
    assert client.delete(HOOK, headers=headers).get_json()["deleted"] is True
    assert client.get(HOOK, headers=headers).status_code == 404


def test_log_filters_paging_and_redeliver(client, db, worker, owner, receiver):
    headers = bearer(owner["secret"])
    client.put(HOOK, json={"url": receiver.url + "/hook"}, headers=headers)
    receiver.plan = [(500, {}), (200, {})]
    for _ in range(3):
        client.post(HOOK + "/test", headers=headers)
    worker()
    page = client.get(LOG + "?limit=2", headers=headers).get_json()
    assert len(page["data"]) == 2 and page["has_more"]
    rest = client.get(LOG + f"?limit=2&after={page['last_id']}", headers=headers).get_json()
    assert len(rest["data"]) == 1 and not rest["has_more"]
    failing = client.get(LOG + "?status=pending", headers=headers).get_json()["data"]
    assert len(failing) == 1 and failing[0]["attempts"][0]["status_code"] == 500
    assert client.get(LOG + "?event_type=webhook.test", headers=headers).get_json()["data"]
    assert client.get(LOG + "?event_type=batch.completed", headers=headers).get_json()["data"] \
        == []
    assert client.get(LOG + "?status=nope", headers=headers).status_code == 400
    done = client.get(LOG + "?status=succeeded", headers=headers).get_json()["data"][0]
    again = client.post(f"{LOG}/{done['id']}/redeliver", headers=headers)
    assert again.status_code == 202
    worker()
    replay = client.get(f"{LOG}/{again.get_json()['id']}", headers=headers).get_json()
    assert replay["status"] == "succeeded" and replay["redelivery_of"] == done["id"]
    ids = [r.headers["webhook-id"] for r in receiver.received("POST", "/hook")]
    assert ids.count(done["event_id"]) == 2  # same webhook-id: receivers can dedupe
    assert len(deliveries(db)) == 4


def test_other_workspaces_and_scopes(client, session, worker, owner, receiver):
    headers = bearer(owner["secret"])
    client.put(HOOK, json={"url": receiver.url + "/hook"}, headers=headers)
    delivery_id = client.post(HOOK + "/test", headers=headers).get_json()["id"]
    stranger = make_user(session, "stranger@example.com")
    _key, other = make_key(session, stranger)
    assert client.get(f"{LOG}/{delivery_id}", headers=bearer(other)).status_code == 404
    assert client.post(f"{LOG}/{delivery_id}/redeliver",
                       headers=bearer(other)).status_code == 404
    assert client.get(LOG, headers=bearer(other)).get_json()["data"] == []
    _key, reader = make_key(session, owner["user"], scopes=["read"])
    assert client.get(LOG, headers=bearer(reader)).status_code == 200
    assert client.put(HOOK, json={"url": receiver.url}, headers=bearer(reader)).status_code == 403
    assert client.post(f"{LOG}/{delivery_id}/redeliver",
                       headers=bearer(reader)).status_code == 403
