"""Refunds and disputes post reversals; reconciliation applies missed grants once and reports
grants without payment; operators grant promo credits and refund unspent purchases."""
import pytest
from sqlalchemy import select

from batchrouter import ledger, reconcile
from batchrouter.models import LedgerTransaction, Purchase, ReconciliationRun, WorkspaceBilling
from tests.billing.helpers import (
    available,
    checkout,
    completed,
    deliver,
    owner_with_key,
    purchase_grants,
    session_id_of,
)
from tests.billing.stripe_stub import event
from tests.factories import login, make_user, post_form, read, workspace_of

pytestmark = pytest.mark.pg


def bought(client, db, stripe_stub, secret, pack="pack_1000"):
    purchase = checkout(client, secret, pack)
    sid = session_id_of(db, purchase["id"])
    assert deliver(client, completed(stripe_stub, sid)).get_json()["outcome"] == "granted"
    return purchase["id"], sid


def spend(db, workspace_id, amount, batch_id="bat_test"):
    """Hold and settle `amount` as a batch would (promo/starter lots go first)."""
    with db.session() as s:
        ledger.reserve(s, workspace_id, batch_id, amount)
    with db.session() as s:
        ledger.settle(s, workspace_id, batch_id, "unit-1", amount)


def test_refund_in_stripe_reverses_and_flags(client, db, stripe_stub):
    _u, workspace_id, secret = owner_with_key(db)
    purchase_id, sid = bought(client, db, stripe_stub, secret, "pack_5000")
    before = available(db, workspace_id)
    charge = stripe_stub.charge_of(sid) | {"amount_refunded": 2000}
    evt = event("charge.refunded", charge)
    assert deliver(client, evt).status_code == 200
    assert deliver(client, evt).get_json()["outcome"] == "duplicate"
    assert before - available(db, workspace_id) == 20_000_000
    flagged = read(db, lambda s: s.get(WorkspaceBilling, workspace_id))
    assert flagged.flagged_at is not None and purchase_id in flagged.flag_reason
    # The rest refunded later: only the difference is reversed.
    deliver(client, event("charge.refunded", charge | {"amount_refunded": 5000}))
    assert before - available(db, workspace_id) == 50_000_000
    assert read(db, lambda s: s.get(Purchase, purchase_id).reversed_amount) == 50_000_000
    assert read(db, lambda s: ledger.verify_balances(s)) == []


def test_dispute_reverses_what_is_left_and_reports_the_spent_part(client, db, stripe_stub):
    _u, workspace_id, secret = owner_with_key(db)
    _purchase_id, sid = bought(client, db, stripe_stub, secret)  # $10 on top of $5 starter
    spend(db, workspace_id, 12_000_000)  # $5 starter first, then $7 of the purchase
    dispute = {"id": "dp_1", "object": "dispute", "amount": 1000,
               "charge": stripe_stub.charge_of(sid)["id"],
               "payment_intent": stripe_stub.sessions[sid]["payment_intent"]}
    outcome = deliver(client, event("charge.dispute.created", dispute)).get_json()["outcome"]
    assert outcome == "reversed 3.000000, unrecovered 7.000000"
    assert available(db, workspace_id) == 0
    reason = read(db, lambda s: s.get(WorkspaceBilling, workspace_id).flag_reason)
    assert "$7.00 already spent" in reason
    assert read(db, lambda s: ledger.verify_balances(s)) == []


def test_a_dispute_decided_for_us_gives_the_credit_back_once(client, db, stripe_stub):
    _u, workspace_id, secret = owner_with_key(db)
    purchase_id, sid = bought(client, db, stripe_stub, secret)
    spend(db, workspace_id, 12_000_000)  # $3 of the purchase left
    dispute = {"id": "dp_2", "object": "dispute", "amount": 1000,
               "charge": stripe_stub.charge_of(sid)["id"],
               "payment_intent": stripe_stub.sessions[sid]["payment_intent"]}
    deliver(client, event("charge.dispute.created", dispute | {"status": "needs_response"}))
    assert available(db, workspace_id) == 0
    won = event("charge.dispute.closed", dispute | {"status": "won"})
    assert deliver(client, won).get_json()["outcome"] == "restored 3.000000"
    # The same decision again (a new event id): nothing more comes back.
    again = event("charge.dispute.closed", dispute | {"status": "won"})
    assert deliver(client, again).get_json()["outcome"] == "restored 0.000000"
    assert available(db, workspace_id) == 3_000_000
    assert read(db, lambda s: s.get(Purchase, purchase_id).reversed_amount) == 0
    assert read(db, lambda s: s.get(WorkspaceBilling, workspace_id).flagged_at) is None
    assert read(db, lambda s: ledger.verify_balances(s)) == []


def test_a_lost_dispute_keeps_the_reversal(client, db, stripe_stub):
    _u, workspace_id, secret = owner_with_key(db)
    purchase_id, sid = bought(client, db, stripe_stub, secret)
    dispute = {"id": "dp_3", "object": "dispute", "amount": 1000,
               "charge": stripe_stub.charge_of(sid)["id"],
               "payment_intent": stripe_stub.sessions[sid]["payment_intent"]}
    deliver(client, event("charge.dispute.created", dispute))
    before = available(db, workspace_id)
    outcome = deliver(client, event("charge.dispute.closed", dispute | {"status": "lost"}))
    assert outcome.get_json()["outcome"] == "dispute closed lost: the reversal stands"
    assert available(db, workspace_id) == before
    assert read(db, lambda s: s.get(Purchase, purchase_id).reversed_amount) == 10_000_000
    assert read(db, lambda s: s.get(WorkspaceBilling, workspace_id).flagged_at) is not None


def operator_client(app, db, email="op@example.com"):
    with db.sessionmaker() as s:
        make_user(s, email, operator=True)
    c = app.test_client()
    login(c, email)
    return c


def test_operator_refunds_unspent_purchase_once(app, client, db, stripe_stub):
    _u, workspace_id, secret = owner_with_key(db)
    purchase_id, sid = bought(client, db, stripe_stub, secret, "pack_5000")
    spend(db, workspace_id, 15_000_000)  # $5 starter, then $10 of the $50 purchase
    op = operator_client(app, db)
    page = op.get("/operator/billing").get_data(as_text=True)
    assert "Refund $40.00 unspent" in page
    path = f"/operator/billing/purchases/{purchase_id}/refund"
    response = post_form(op, path, {}, page="/operator/billing")
    assert response.status_code == 303
    [refund] = stripe_stub.refunds
    assert refund["amount"] == 4000 and refund["_key"] == f"refund:{purchase_id}:0"
    assert available(db, workspace_id) == 0
    again = post_form(op, path, {}, page="/operator/billing")
    assert again.status_code == 303 and len(stripe_stub.refunds) == 1
    assert "Nothing of this purchase is refundable" in op.get("/operator/billing").get_data(
        as_text=True)
    # Stripe then reports the refund it made for us: nothing is reversed twice, no flag.
    outcome = deliver(client, event("charge.refunded", stripe_stub.charge_of(sid)))
    assert outcome.get_json()["outcome"] == "already reversed"
    assert read(db, lambda s: s.get(WorkspaceBilling, workspace_id)) is None \
        or read(db, lambda s: s.get(WorkspaceBilling, workspace_id).flagged_at) is None
    kinds = read(db, lambda s: s.scalars(select(LedgerTransaction.kind).where(
        LedgerTransaction.workspace_id == workspace_id)).all())
    assert kinds.count("refund") == 1 and "reverse" not in kinds


def test_operator_grants_promo_with_expiry_once_per_form(app, db):
    with db.sessionmaker() as s:
        user = make_user(s, "promo@example.com")
        workspace_id = workspace_of(s, user)
    before = available(db, workspace_id)
    op = operator_client(app, db)
    page = op.get("/operator/billing").get_data(as_text=True)
    nonce = page.split('name="nonce" value="')[1].split('"')[0]
    form = {"workspace": "promo@example.com", "amount": "25.00", "reason": "Conference",
            "expires": "2099-01-31", "nonce": nonce}
    post_form(op, "/operator/billing/grants", form, page="/operator/billing")
    post_form(op, "/operator/billing/grants", form, page="/operator/billing")  # double submit
    assert available(db, workspace_id) - before == 25_000_000
    listing = op.get("/operator/billing").get_data(as_text=True)
    assert "Conference" in listing and "$25.00" in listing
    bad = post_form(op, "/operator/billing/grants", form | {"amount": "-3", "nonce": "n2"},
                    page="/operator/billing")
    assert bad.status_code == 303
    assert available(db, workspace_id) - before == 25_000_000
    # Promo credit is never refundable: no purchase, no refund button.
    assert "unspent</button>" not in listing


def test_non_operators_cannot_reach_operator_billing(app, client, db):
    _u, _w, _secret = owner_with_key(db)
    login(client, "buyer@example.com")
    assert client.get("/operator/billing").status_code == 403


def test_reconciliation_applies_a_missed_grant_once_and_reports_grants_without_payment(
        app, client, db, stripe_stub):
    _u, workspace_id, secret = owner_with_key(db)
    missed = checkout(client, secret)
    stripe_stub.pay(session_id_of(db, missed["id"]))  # paid, but the webhook never came
    unpaid = checkout(client, secret, "pack_5000")  # still open at Stripe
    with db.session() as s:  # purchased credit nobody paid for
        ledger.grant(s, workspace_id, 7_000_000, kind="purchase", reason="bug",
                     idempotency_key="stripe-session:cs_ghost")
    before = available(db, workspace_id)
    run = reconcile.run(db, app.config)
    assert run.status == "problems" and run.grants_applied == 1 and run.sessions_checked == 2
    kinds = sorted(f["kind"] for f in run.findings)
    assert kinds == ["grant_applied", "grant_without_payment"]
    assert available(db, workspace_id) - before == 10_000_000
    assert read(db, lambda s: s.get(Purchase, missed["id"]).status) == "granted"
    assert read(db, lambda s: s.get(Purchase, unpaid["id"]).status) == "open"
    # A second run grants nothing more; the CLI prints the same report and exits 1.
    result = app.test_cli_runner().invoke(args=["billing", "reconcile"])
    assert result.exit_code == 1
    assert "0 missing grants applied" in result.output and "cs_ghost" in result.output
    assert available(db, workspace_id) - before == 10_000_000
    assert purchase_grants(db, workspace_id) == 2
    op = operator_client(app, db)
    page = op.get("/operator/billing").get_data(as_text=True)
    assert "grant_without_payment" in page and "cs_ghost" in page


def test_reconciliation_pages_through_sessions(app, client, db, stripe_stub, monkeypatch):
    _u, _workspace_id, secret = owner_with_key(db)
    ids = [checkout(client, secret)["id"] for _ in range(3)]
    for pid in ids:
        stripe_stub.pay(session_id_of(db, pid))
    from batchrouter import stripe_api
    real = stripe_api.client

    def small_pages(config):
        c = real(config)
        original = c.v1.checkout.sessions.list
        c.v1.checkout.sessions.list = lambda params, *a: original(params | {"limit": 2}, *a)
        return c
    monkeypatch.setattr(stripe_api, "client", small_pages)
    run = reconcile.run(db, app.config)
    assert run.grants_applied == 3 and run.status == "ok"
    assert len(stripe_stub.server.received("GET", "/v1/checkout/sessions")) == 2


def test_reconciliation_without_stripe_is_skipped(app, db):
    app.config["STRIPE_SECRET_KEY"] = None
    run = reconcile.run(db, app.config)
    assert run.status == "skipped"
    assert read(db, lambda s: s.scalars(select(ReconciliationRun)).one().status) == "skipped"
