"""GET /v1/billing/balance, GET /v1/billing/ledger, POST /v1/billing/checkout (SPEC §6)."""
import pytest

from batchrouter import ledger
from tests.billing.helpers import checkout, completed, deliver, owner_with_key, session_id_of
from tests.factories import add_member, bearer, make_key

pytestmark = pytest.mark.pg


def test_balance_and_ledger_after_a_purchase(client, db, stripe_stub):
    _u, workspace_id, secret = owner_with_key(db)
    purchase = checkout(client, secret)
    deliver(client, completed(stripe_stub, session_id_of(db, purchase["id"])))
    with db.session() as s:
        ledger.reserve(s, workspace_id, "bat_api", 2_000_000)
    with db.session() as s:
        ledger.settle(s, workspace_id, "bat_api", "u1", 1_500_000)
    body = client.get("/v1/billing/balance", headers=bearer(secret)).get_json()
    assert body == {"object": "balance", "currency": "usd", "available": "13.000000",
                    "reserved": "0.500000", "spent": "1.500000",
                    "spent_this_month": "1.500000", "low_balance_threshold": "1.000000",
                    "low_balance": False}
    page = client.get("/v1/billing/ledger", headers=bearer(secret)).get_json()
    kinds = [row["kind"] for row in page["data"]]
    assert kinds == ["settle", "reserve", "grant", "grant"]
    settle, reserve, grant = page["data"][0], page["data"][1], page["data"][2]
    assert settle["batch_id"] == "bat_api" and settle["reserved_change"] == "-1.500000" \
        and settle["spent_change"] == "1.500000"
    assert reserve["available_change"] == "-2.000000"
    assert grant["purchase_id"] == purchase["id"] and grant["available_change"] == "10.000000"
    assert page["next_cursor"] is None


def test_ledger_cursor_paging_and_filters(client, db, stripe_stub):
    _u, workspace_id, secret = owner_with_key(db)
    with db.session() as s:
        for i in range(5):
            ledger.grant(s, workspace_id, 1_000_000 + i, kind="promo", reason=f"g{i}",
                         idempotency_key=f"promo-{i}")
    seen, cursor = [], None
    while True:
        url = "/v1/billing/ledger?limit=2&kind=grant" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=bearer(secret)).get_json()
        seen += [row["id"] for row in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 6  # 5 promo grants + the starter grant
    assert client.get("/v1/billing/ledger?kind=reserve", headers=bearer(secret)) \
        .get_json()["data"] == []
    for bad in ("cursor=%%%", "kind=nope", "since=yesterday", "limit=x"):
        response = client.get(f"/v1/billing/ledger?{bad}", headers=bearer(secret))
        assert response.status_code == 400, bad
        assert response.get_json()["error"]["code"] in ("invalid_cursor", "invalid_filter",
                                                        "invalid_limit")


def test_checkout_errors_and_scope(app, client, db, stripe_stub):
    _user, workspace_id, secret = owner_with_key(db)
    response = client.post("/v1/billing/checkout", json={"pack": "pack_7"}, headers=bearer(secret))
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "unknown_pack"
    assert "pack_1000" in response.get_json()["error"]["details"]["packs"]
    packs = client.get("/v1/billing/packs", headers=bearer(secret)).get_json()["data"]
    assert [p["amount"] for p in packs] == ["10.000000", "50.000000", "250.000000",
                                            "1000.000000"]
    with db.sessionmaker() as s:
        member = add_member(s, workspace_id, "member@example.com", "member")
        _k, member_secret = make_key(s, member)
    for method, path in (("get", "/v1/billing/balance"), ("get", "/v1/billing/ledger"),
                         ("post", "/v1/billing/checkout")):
        response = getattr(client, method)(path, json={"pack": "pack_1000"},
                                           headers=bearer(member_secret))
        assert response.status_code == 403, path
        assert response.get_json()["error"]["code"] == "insufficient_scope"
    stripe_stub.down = True
    response = client.post("/v1/billing/checkout", json={"pack": "pack_1000"},
                           headers=bearer(secret))
    assert response.status_code == 502
    assert response.get_json()["error"]["code"] == "stripe_unavailable"
    app.config["STRIPE_SECRET_KEY"] = None
    response = client.post("/v1/billing/checkout", json={"pack": "pack_1000"},
                           headers=bearer(secret))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "billing_not_configured"


def test_checkout_idempotency_key_replays_the_same_session(client, db, stripe_stub):
    _u, _w, secret = owner_with_key(db)
    headers = bearer(secret) | {"Idempotency-Key": "topup-1"}
    first = client.post("/v1/billing/checkout", json={"pack": "pack_1000"}, headers=headers)
    second = client.post("/v1/billing/checkout", json={"pack": "pack_1000"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.get_json()["url"] == second.get_json()["url"]
    assert len(stripe_stub.server.received("POST", "/v1/checkout/sessions")) == 1
    polled = client.get(f"/v1/billing/purchases/{first.get_json()['id']}",
                        headers=bearer(secret)).get_json()
    assert polled["status"] == "open"


def test_billing_paths_are_in_the_openapi_document(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    for path in ("/v1/billing/balance", "/v1/billing/ledger", "/v1/billing/checkout"):
        assert path in paths
