"""Console webhooks pages through the test client: save, secret once, rotate, filters, test
event, redeliver, disabled banner, roles."""
import pytest
from sqlalchemy import select, update

from batchrouter.models import WebhookEndpoint
from tests.factories import add_member, get_csrf, login, post_form, read
from tests.webhooks.conftest import deliveries


@pytest.fixture
def signed_in(client, owner):
    login(client)
    return client


def save(client, url, secret=""):
    return post_form(client, "/webhook-endpoints", {"url": url, "secret": secret})


def test_save_shows_secret_once_and_rotate(signed_in, db, receiver):
    page = save(signed_in, receiver.url + "/hook")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "whsec_" in html and "shown <strong>once</strong>" in html
    again = signed_in.get("/webhook-endpoints").get_data(as_text=True)
    assert "whsec_" not in again and receiver.url in again
    rotated = post_form(signed_in, "/webhook-endpoints/rotate", {}, page="/webhook-endpoints")
    assert "previous secret also signs" in rotated.get_data(as_text=True)


@pytest.mark.parametrize("app_overrides", [{"WEBHOOKS_ALLOW_PRIVATE_TARGETS": False}],
                         indirect=True)
def test_refused_url_is_explained(signed_in):
    page = save(signed_in, "https://0x7f000001/hook")
    assert page.status_code == 422
    assert "only public addresses" in page.get_data(as_text=True)


def test_log_test_event_filters_redeliver_and_banner(signed_in, db, worker, receiver):
    save(signed_in, receiver.url + "/hook")
    [endpoint] = read(db, lambda s: s.scalars(select(WebhookEndpoint.id)).all())
    path = f"/webhook-endpoints/{endpoint}"
    post_form(signed_in, f"{path}/test", {}, page=path)
    worker()
    html = signed_in.get(path).get_data(as_text=True)
    assert "webhook.test" in html and "succeeded" in html and "200" in html
    assert "No deliveries match" in signed_in.get(path + "?status=failed").get_data(as_text=True)
    fragment = signed_in.get(path + "?event_type=webhook.test", headers={"HX-Request": "true"})
    assert fragment.get_data(as_text=True).startswith('<div id="deliveries">')
    [d] = deliveries(db)
    post_form(signed_in, f"/webhook-endpoints/deliveries/{d.id}/redeliver", {}, page=path)
    worker()
    assert len(receiver.received("POST", "/hook")) == 2
    with db.session() as s:
        s.execute(update(WebhookEndpoint).values(status="disabled",
                                                 disabled_reason="the receiver answered 410 Gone"))
    for page in ("/webhook-endpoints", path):
        assert "the receiver answered 410 Gone" in signed_in.get(page).get_data(as_text=True)


def test_viewer_reads_but_cannot_change(client, db, owner, session, receiver):
    add_member(session, owner["workspace_id"], "viewer@example.com", "viewer")
    login(client, "viewer@example.com")
    assert client.get("/webhook-endpoints").status_code == 200
    token = get_csrf(client, "/webhook-endpoints")
    response = client.post("/webhook-endpoints", data={"url": receiver.url, "csrf_token": token})
    assert response.status_code == 403


def test_console_posts_need_the_csrf_token(signed_in, db, receiver):
    """The console lives outside /webhooks/ (the CSRF-exempt inbound prefix)."""
    save(signed_in, receiver.url + "/hook")
    [endpoint] = read(db, lambda s: s.scalars(select(WebhookEndpoint.id)).all())
    for path in ("/webhook-endpoints", "/webhook-endpoints/rotate",
                 f"/webhook-endpoints/{endpoint}/test"):
        assert signed_in.post(path, data={"url": receiver.url}).status_code in (400, 403), path
