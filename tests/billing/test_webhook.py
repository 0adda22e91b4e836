"""The Stripe webhook: signature checks, de-duplication, grant once per paid session."""
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl

import pytest
import requests
from sqlalchemy import select

from batchrouter.models import Purchase, SecurityEvent, StripeEvent
from tests.billing.helpers import (
    available,
    checkout,
    completed,
    deliver,
    owner_with_key,
    purchase_grants,
    session_id_of,
)
from tests.billing.stripe_stub import event, signed, unflatten
from tests.factories import read

pytestmark = pytest.mark.pg




def test_checkout_calls_stripe_with_the_payment_session(client, db, stripe_stub):
    _user, workspace_id, secret = owner_with_key(db)
    body = checkout(client, secret, "pack_5000")
    assert body["status"] == "open" and body["url"].startswith(stripe_stub.url + "/pay/cs_test_")
    [call] = stripe_stub.server.received("POST", "/v1/checkout/sessions")
    params = unflatten(parse_qsl(call.body.decode()))
    assert params["mode"] == "payment"
    assert params["client_reference_id"] == workspace_id
    assert params["metadata"] == {"purchase_id": body["id"], "workspace_id": workspace_id,
                                  "pack_id": "pack_5000"}
    assert params["line_items"]["0"]["price_data"]["unit_amount"] == "5000"
    assert params["success_url"].endswith(f"/billing/purchases/{body['id']}"
                                          "?session_id={CHECKOUT_SESSION_ID}")
    assert call.headers["idempotency-key"] == f"checkout:{body['id']}"
    assert call.headers["authorization"] == "Bearer sk_test_stub"
    assert read(db, lambda s: s.get(Purchase, body["id"]).status) == "open"
    assert body["amount"] == "50.000000"


def test_same_completed_event_five_times_in_sequence_grants_once(client, db, stripe_stub):
    _user, workspace_id, secret = owner_with_key(db)
    before = available(db, workspace_id)
    purchase = checkout(client, secret)
    evt = completed(stripe_stub, session_id_of(db, purchase["id"]))
    outcomes = []
    for _ in range(5):
        response = deliver(client, evt)
        assert response.status_code == 200
        outcomes.append(response.get_json()["outcome"])
    assert outcomes == ["granted"] + ["duplicate"] * 4
    assert available(db, workspace_id) - before == 10_000_000
    assert purchase_grants(db, workspace_id) == 1
    assert read(db, lambda s: s.get(Purchase, purchase["id"]).status) == "granted"


def test_concurrent_deliveries_grant_once(live_server, db, stripe_stub):
    db = live_server.app.extensions["batchrouter"].db
    _user, workspace_id, secret = owner_with_key(db)
    before = available(db, workspace_id)
    response = requests.post(live_server.url + "/v1/billing/checkout", json={"pack": "pack_1000"},
                             headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    sid = session_id_of(db, response.json()["id"])
    same = completed(stripe_stub, sid)
    # The same event five times at once, then five distinct events for the same session.
    events = [same] * 5 + [event(t, stripe_stub.public(sid)) for t in
                           ["checkout.session.completed"] * 3
                           + ["checkout.session.async_payment_succeeded"] * 2]

    def send(evt):
        body, headers = signed(evt)
        return requests.post(live_server.url + "/webhooks/stripe", data=body, headers=headers,
                             timeout=30)

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(send, events))
    assert [r.status_code for r in results] == [200] * 10
    assert [r.json()["outcome"] for r in results].count("granted") == 1
    assert available(db, workspace_id) - before == 10_000_000
    assert purchase_grants(db, workspace_id) == 1


@pytest.mark.parametrize("case", ["bad_signature", "missing_header", "wrong_secret", "stale",
                                  "tampered"])
def test_unverified_events_are_refused_and_logged(client, db, stripe_stub, case):
    _user, workspace_id, secret = owner_with_key(db)
    before = available(db, workspace_id)
    evt = completed(stripe_stub, session_id_of(db, checkout(client, secret)["id"]))
    body, headers = signed(evt, **({"secret": "whsec_other"} if case == "wrong_secret" else {}),
                           **({"timestamp": int(__import__("time").time()) - 360}
                              if case == "stale" else {}))
    if case == "bad_signature":
        headers["Stripe-Signature"] = headers["Stripe-Signature"].split(",v1=")[0] + ",v1=" + "0" * 64
    elif case == "missing_header":
        del headers["Stripe-Signature"]
    elif case == "tampered":
        body = body.replace(b'"amount_total": 1000', b'"amount_total": 9999')
    response = client.post("/webhooks/stripe", data=body, headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] in ("invalid_signature", "missing_signature")
    assert available(db, workspace_id) == before
    assert read(db, lambda s: s.scalars(select(StripeEvent)).all()) == []
    logged = read(db, lambda s: s.scalars(select(SecurityEvent).where(
        SecurityEvent.kind == "stripe_webhook_rejected")).all())
    assert len(logged) == 1


def test_webhook_without_secret_configured_is_unavailable(client, db, app):
    app.config["STRIPE_WEBHOOK_SECRET"] = None
    body, headers = signed(event("checkout.session.completed", {"id": "cs_x"}))
    response = client.post("/webhooks/stripe", data=body, headers=headers)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "billing_not_configured"


def test_expired_session_grants_nothing(client, db, stripe_stub):
    _user, workspace_id, secret = owner_with_key(db)
    before = available(db, workspace_id)
    purchase = checkout(client, secret)
    sid = session_id_of(db, purchase["id"])
    assert deliver(client, event("checkout.session.expired",
                                 stripe_stub.expire(sid))).status_code == 200
    assert read(db, lambda s: s.get(Purchase, purchase["id"]).status) == "expired"
    # A thin "completed" event for it: the re-fetched session is expired, nothing is granted.
    thin = {"id": sid, "object": "checkout.session"}
    assert deliver(client, event("checkout.session.completed", thin)).get_json()["outcome"] \
        == "left expired"
    assert available(db, workspace_id) == before


def test_unclear_event_is_checked_against_the_api(client, db, stripe_stub):
    _user, workspace_id, secret = owner_with_key(db)
    purchase = checkout(client, secret)
    sid = session_id_of(db, purchase["id"])
    thin = {"id": sid, "object": "checkout.session"}  # no status, no payment_status
    assert deliver(client, event("checkout.session.completed", thin)).get_json()["outcome"] \
        == "not paid yet (unpaid)"
    assert purchase_grants(db, workspace_id) == 0
    stripe_stub.pay(sid)
    fetched_before = len(stripe_stub.server.received("GET", f"/v1/checkout/sessions/{sid}"))
    assert deliver(client, event("checkout.session.async_payment_succeeded", thin)) \
        .get_json()["outcome"] == "granted"
    assert len(stripe_stub.server.received("GET", f"/v1/checkout/sessions/{sid}")) \
        == fetched_before + 1
    assert purchase_grants(db, workspace_id) == 1


def test_async_payment_failure_and_amount_mismatch_grant_nothing(client, db, stripe_stub):
    _user, workspace_id, secret = owner_with_key(db)
    first, second = checkout(client, secret), checkout(client, secret)
    sid = session_id_of(db, first["id"])
    deliver(client, event("checkout.session.async_payment_failed", stripe_stub.public(sid)))
    assert read(db, lambda s: s.get(Purchase, first["id"]).status) == "failed"
    sid2 = session_id_of(db, second["id"])
    paid = stripe_stub.pay(sid2) | {"amount_total": 1}
    outcome = deliver(client, event("checkout.session.completed", paid)).get_json()["outcome"]
    assert outcome.startswith("not granted")
    assert purchase_grants(db, workspace_id) == 0


def test_events_for_other_products_are_acknowledged_and_ignored(client, db, stripe_stub):
    foreign = {"id": "cs_foreign", "object": "checkout.session", "status": "complete",
               "payment_status": "paid", "amount_total": 500, "currency": "usd",
               "metadata": {}}
    assert deliver(client, event("checkout.session.completed", foreign)).get_json()["outcome"] \
        == "not a BatchRouter purchase"
    assert deliver(client, event("customer.created", {"id": "cus_1"})).get_json()["outcome"] \
        == "ignored"


def test_paid_session_whose_purchase_row_was_never_saved_is_granted_from_metadata(
        app, client, db, stripe_stub):
    """The browser (or our commit) died between creating the session and saving the row."""
    from batchrouter import stripe_api

    _user, workspace_id, _secret = owner_with_key(db)
    pack = stripe_api.find_pack(app.config, "pack_5000")
    created = stripe_api.create_checkout(app.config, purchase_id="pur_lost", pack=pack,
                                         workspace_id=workspace_id, email=None,
                                         success_url="http://x/s", cancel_url="http://x/c")
    before = available(db, workspace_id)
    assert deliver(client, completed(stripe_stub, created["id"])).get_json()["outcome"] \
        == "granted"
    purchase = read(db, lambda s: s.get(Purchase, "pur_lost"))
    assert purchase.status == "granted" and purchase.workspace_id == workspace_id
    assert available(db, workspace_id) - before == 50_000_000
