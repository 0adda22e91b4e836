import pytest

from batchrouter import ledger
from batchrouter.errors import ValidationFailed
from tests.factories import make_user, workspace_of

pytestmark = pytest.mark.pg


def test_grants_are_idempotent_and_balanced(session):
    user = make_user(session)
    ws = workspace_of(session, user)
    ledger.grant(session, ws, 10_000_000, kind="promo", reason="launch", idempotency_key="p1")
    ledger.grant(session, ws, 10_000_000, kind="promo", reason="launch", idempotency_key="p1")
    session.commit()
    assert ledger.balances(session, ws).available == 15_000_000  # starter 5 + promo 10
    assert ledger.verify_balances(session) == []
    assert ledger.account(session, None, "promo").balance == -15_000_000


def test_grant_rejects_non_positive_and_unknown_kinds(session):
    user = make_user(session)
    ws = workspace_of(session, user)
    with pytest.raises(ValidationFailed):
        ledger.grant(session, ws, 0, kind="promo", reason="x", idempotency_key="z")
    with pytest.raises(ValidationFailed):
        ledger.grant(session, ws, 5, kind="gift", reason="x", idempotency_key="z")


def test_purchase_lot_comes_from_stripe_account(session):
    user = make_user(session)
    ws = workspace_of(session, user)
    ledger.grant(session, ws, 50_000_000, kind="purchase", reason="pack",
                 idempotency_key="cs_1")
    session.commit()
    assert ledger.account(session, None, "stripe").balance == -50_000_000
    assert ledger.verify_balances(session) == []
