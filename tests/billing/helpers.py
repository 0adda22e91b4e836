"""Shared steps of the billing tests."""
from __future__ import annotations

from batchrouter import ledger
from batchrouter.models import Purchase
from tests.billing.stripe_stub import event, signed
from tests.factories import bearer, make_key, make_user, read, workspace_of


def owner_with_key(db, email="buyer@example.com"):
    with db.sessionmaker() as s:
        user = make_user(s, email)
        _key, secret = make_key(s, user)
        return user, workspace_of(s, user), secret


def checkout(client, secret, pack="pack_1000") -> dict:
    response = client.post("/v1/billing/checkout", json={"pack": pack}, headers=bearer(secret))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def session_id_of(db, purchase_id: str) -> str:
    return read(db, lambda s: s.get(Purchase, purchase_id).stripe_session_id)


def deliver(client, evt: dict, **kwargs):
    body, headers = signed(evt, **kwargs)
    return client.post("/webhooks/stripe", data=body, headers=headers)


def completed(stripe_stub, sid: str, event_id: str | None = None) -> dict:
    return event("checkout.session.completed", stripe_stub.pay(sid), event_id)


def available(db, workspace_id) -> int:
    return read(db, lambda s: ledger.balances(s, workspace_id).available)


def purchase_grants(db, workspace_id) -> int:
    from sqlalchemy import func, select

    from batchrouter.models import CreditLot

    return read(db, lambda s: s.scalar(select(func.count()).select_from(CreditLot).where(
        CreditLot.workspace_id == workspace_id, CreditLot.kind == "purchase")))
