"""The console batch pages through the test client: quote → create → detail → download."""
import re

import pytest

from tests.factories import get_csrf, login, make_user, post_form

ITEMS = "\n".join(
    f'{{"customer_item_id":"c{i}","operation":"responses","model":"sandbox-chat",'
    f'"input":{{"messages":[{{"role":"user","content":"hello {i}"}}]}}}}' for i in range(7))


@pytest.fixture
def app_overrides(tmp_path):
    return {"BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage"),
            "BATCHROUTER_SANDBOX_BATCH_DELAY": 0.0, "BATCHROUTER_POLL_INTERVAL": 0.0}


def quote_in_console(client):
    response = post_form(client, "/batches/new/quote", {"manifest": ITEMS}, page="/batches/new")
    assert response.status_code == 200, response.get_data(as_text=True)[-2000:]
    return re.search(r'name="quote_id" value="(qlock_[^"]+)"', response.get_data(as_text=True)).group(1)


def created_in_console(client, session) -> str:
    """Sign up, sign in, quote and create a batch in the console; its detail page URL."""
    make_user(session)
    login(client)
    quote_id = quote_in_console(client)
    created = post_form(client, "/batches/create", {"quote_id": quote_id}, page="/batches/new")
    assert created.status_code == 303
    return created.headers["Location"]


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
    detail_url = created_in_console(client, session)
    assert "Yes, cancel" in client.get(detail_url + "/cancel").get_data(as_text=True)
    token = get_csrf(client, detail_url + "/cancel")
    done = client.post(detail_url + "/cancel", data={"csrf_token": token})
    assert done.status_code == 303
    assert "cancelling" in client.get(detail_url).get_data(as_text=True)


def test_progress_fragment_revalidates_with_its_etag(client, session, seeded_catalog, worker):
    detail_url = created_in_console(client, session)
    htmx = {"HX-Request": "true"}
    first = client.get(detail_url + "/progress", headers=htmx)
    etag = first.headers["ETag"]
    assert first.status_code == 200 and etag.startswith('W/"')
    assert first.headers["Cache-Control"] == "private, no-cache"
    assert "<code>sandbox/sandbox-chat" in first.get_data(as_text=True)  # the lanes table
    same = client.get(detail_url + "/progress", headers={**htmx, "If-None-Match": etag})
    assert same.status_code == 304 and same.data == b"" and same.headers["ETag"] == etag
    worker()  # the batch moves on: the old ETag no longer matches
    moved = client.get(detail_url + "/progress", headers={**htmx, "If-None-Match": etag})
    assert moved.status_code == 200 and moved.headers["ETag"] != etag
    assert "completed" in moved.get_data(as_text=True)
    lanes = re.findall(r"<td>(\d+) / (\d+)</td>", moved.get_data(as_text=True))
    assert lanes and all(done == units for done, units in lanes)


def test_items_table_is_one_feedback_form(client, session, seeded_catalog, worker):
    from batchrouter.models import Feedback

    detail_url = created_in_console(client, session)
    worker()
    page = client.get(detail_url).get_data(as_text=True)
    assert page.count('<form id="item-feedback"') == 1
    assert page.count('name="item" value="c') == 7  # a Rate button per succeeded row
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    rated = client.post(detail_url + "/feedback",
                        data={"csrf_token": token, "item": "c3", "score:c3": "2",
                              "score:c4": "5"})
    assert rated.status_code == 303
    row = session.query(Feedback).one()
    assert row.score == 2 and row.provider == "sandbox"
    assert "feedback saved for c3" in client.get(detail_url).get_data(as_text=True)
    missing = client.post(detail_url + "/feedback",
                          data={"csrf_token": token, "item": "nope", "score:nope": "3"})
    assert missing.status_code == 303 and session.query(Feedback).count() == 1


def test_items_table_shows_results_and_errors(client, session, seeded_catalog, worker):
    from sqlalchemy import update

    from batchrouter.models import Item

    detail_url = created_in_console(client, session)
    worker()
    session.execute(update(Item).where(Item.customer_item_id == "c5").values(
        status="failed", result=None, error={"code": "provider_error", "message": "Boom <b>"}))
    session.commit()
    page = client.get(detail_url).get_data(as_text=True)
    row = re.search(r"<tr><td><code>c2</code>.*?</tr>", page, re.DOTALL).group(0)
    assert re.search(r"<td><code>sandbox/sandbox-chat[^<]*</code></td>", row)
    assert re.search(r'<td class="cell-text">\[sandbox [^<]+</td><td>\$0\.\d+</td>', row)
    failed = re.search(r"<tr><td><code>c5</code>.*?</tr>", page, re.DOTALL).group(0)
    assert ('<td>—</td><td class="cell-text"><code>provider_error</code> Boom &lt;b&gt;</td>'
            in failed)
    assert 'name="item" value="c5"' not in failed  # only succeeded items can be rated
    only_failed = client.get(detail_url + "/items?item_status=failed",
                             headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<code>c5</code>" in only_failed and "<code>c2</code>" not in only_failed
