"""The console batch pages through the test client: quote → create → detail → download."""
import re

import pytest

from tests.factories import get_csrf, login, make_user, post_form

ITEMS = "\n".join(
    '{"customer_item_id":"c%d","operation":"responses","model":"sandbox-chat",'
    '"input":{"messages":[{"role":"user","content":"hello %d"}]}}' % (i, i) for i in range(7))


@pytest.fixture
def app_overrides(tmp_path):
    return {"BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage"),
            "BATCHROUTER_SANDBOX_BATCH_DELAY": 0.0, "BATCHROUTER_POLL_INTERVAL": 0.0}


def quote_in_console(client):
    response = post_form(client, "/batches/new/quote", {"manifest": ITEMS}, page="/batches/new")
    assert response.status_code == 200, response.get_data(as_text=True)[-2000:]
    return re.search(r'name="quote_id" value="(qlock_[^"]+)"', response.get_data(as_text=True)).group(1)


def test_quote_create_watch_download(client, session, seeded_catalog, worker):
    make_user(session)
    login(client)
    quote_id = quote_in_console(client)
    created = post_form(client, "/batches/create", {"quote_id": quote_id}, page="/batches/new")
    assert created.status_code == 303
    detail_url = created.headers["Location"]
    page = client.get(detail_url).get_data(as_text=True)
    assert "queued" in page and 'hx-trigger="load delay:1s"' in page
    worker()
    fragment = client.get(detail_url + "/progress", headers={"HX-Request": "true"})
    html = fragment.get_data(as_text=True)
    assert "<html" not in html and "completed" in html and "hx-trigger" not in html
    assert "HX-Request" in fragment.headers["Vary"]
    download = client.get(detail_url + "/download/results")
    assert download.status_code == 303
    body = client.get(download.headers["Location"])
    assert body.status_code == 200 and body.data.count(b"\n") == 7
    listing = client.get("/batches?status=completed").get_data(as_text=True)
    assert detail_url.rsplit("/", 1)[1] in listing
    assert "Route receipt" in client.get(detail_url + "/receipt").get_data(as_text=True)


def test_cancel_needs_confirmation(client, session, seeded_catalog):
    make_user(session)
    login(client)
    quote_id = quote_in_console(client)
    detail_url = post_form(client, "/batches/create", {"quote_id": quote_id},
                           page="/batches/new").headers["Location"]
    assert "Yes, cancel" in client.get(detail_url + "/cancel").get_data(as_text=True)
    token = get_csrf(client, detail_url + "/cancel")
    done = client.post(detail_url + "/cancel", data={"csrf_token": token})
    assert done.status_code == 303
    assert "cancelling" in client.get(detail_url).get_data(as_text=True)
