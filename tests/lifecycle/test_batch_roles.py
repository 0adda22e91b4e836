"""Batch routes by role (docs/roles.md): viewers read, members run and cancel."""
import pytest

from tests.factories import add_member, bearer, login, make_key, make_user, post_form, workspace_of
from tests.lifecycle.helpers import chat_items, quote, quote_and_create


@pytest.fixture
def app_overrides(tmp_path):
    return {"BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage")}


def test_viewer_reads_batches_but_cannot_create_or_cancel(client, session, seeded_catalog):
    owner = make_user(session)
    ws = workspace_of(session, owner)
    _k, owner_secret = make_key(session, owner)
    _q, batch = quote_and_create(client, owner_secret, chat_items(3))
    viewer = add_member(session, ws, "viewer@example.com", "viewer")
    _k, viewer_secret = make_key(session, viewer)
    assert client.get(f"/v1/batches/{batch['id']}", headers=bearer(viewer_secret)).status_code == 200
    q = quote(client, owner_secret, chat_items(2, prefix="v"))
    denied = client.post("/v1/batches", json={"quote_id": q["id"], "items": chat_items(2, prefix="v")},
                         headers=bearer(viewer_secret))
    assert denied.status_code == 403 and denied.get_json()["error"]["code"] == "insufficient_scope"
    cancel = client.post(f"/v1/batches/{batch['id']}/cancel", headers=bearer(viewer_secret))
    assert cancel.status_code == 403
    login(client, "viewer@example.com")
    assert client.get("/batches").status_code == 200
    assert client.get(f"/batches/{batch['id']}").status_code == 200
    assert client.get(f"/batches/{batch['id']}/cancel").status_code == 403
    assert client.get("/batches/new").status_code == 403


def test_member_can_cancel_in_the_console(client, session, seeded_catalog):
    owner = make_user(session)
    ws = workspace_of(session, owner)
    _k, secret = make_key(session, owner)
    _q, batch = quote_and_create(client, secret, chat_items(3))
    add_member(session, ws, "member@example.com", "member")
    login(client, "member@example.com")
    response = post_form(client, f"/batches/{batch['id']}/cancel", {},
                         page=f"/batches/{batch['id']}/cancel")
    assert response.status_code == 303
    assert client.get(f"/v1/batches/{batch['id']}").get_json()["status"] == "cancelling"
