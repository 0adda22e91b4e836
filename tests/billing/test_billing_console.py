"""The billing page, the Buy redirect, the success page that never grants, CSV export and
the low-balance warning."""
import csv
import io

import pytest
from sqlalchemy import select

from batchrouter import ledger
from batchrouter.models import EmailMessage
from tests.billing.helpers import available, completed, deliver, owner_with_key, purchase_grants
from tests.factories import add_member, login, post_form, read

pytestmark = pytest.mark.pg


def signed_in(client, db):
    _u, workspace_id, _secret = owner_with_key(db)
    login(client, "buyer@example.com")
    return workspace_id


def buy(client, pack="pack_1000"):
    response = post_form(client, "/billing/checkout", {"pack": pack}, page="/billing")
    assert response.status_code == 303
    return response.headers["Location"]


def test_buy_redirects_to_checkout_and_the_success_page_never_grants(client, db, stripe_stub):
    workspace_id = signed_in(client, db)
    page = client.get("/billing")
    assert "Buy $10.00" in page.get_data(as_text=True)
    assert f"form-action 'self' https://checkout.stripe.com {stripe_stub.url}" \
        in page.headers["Content-Security-Policy"]
    location = buy(client)
    assert location.startswith(stripe_stub.url + "/pay/cs_test_")
    sid = location.rsplit("/", 1)[1]
    before = available(db, workspace_id)
    # Redirect before the webhook: "credits arriving", polling, nothing granted.
    stripe_stub.pay(sid)
    success = stripe_stub.sessions[sid]["success_url"].replace("{CHECKOUT_SESSION_ID}", sid)
    path = success.split("127.0.0.1:5000", 1)[1]
    for _ in range(3):
        html = client.get(path).get_data(as_text=True)
        assert "Payment received, credits arriving" in html and 'hx-trigger="load delay:2s"' in html
    assert available(db, workspace_id) == before
    deliver(client, completed(stripe_stub, sid))
    fragment = client.get(path, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "Your credits have arrived" in fragment and "hx-get" not in fragment
    assert available(db, workspace_id) - before == 10_000_000
    assert purchase_grants(db, workspace_id) == 1


def test_webhook_before_redirect_grants_once(client, db, stripe_stub):
    workspace_id = signed_in(client, db)
    sid = buy(client).rsplit("/", 1)[1]
    deliver(client, completed(stripe_stub, sid))
    success = stripe_stub.sessions[sid]["success_url"].replace("{CHECKOUT_SESSION_ID}", sid)
    html = client.get(success.split("127.0.0.1:5000", 1)[1]).get_data(as_text=True)
    assert "Your credits have arrived" in html
    assert purchase_grants(db, workspace_id) == 1
    listing = client.get("/billing").get_data(as_text=True)
    assert 'data-testid="purchase-row"' in listing and ">granted<" in listing


def test_receipt_link_is_fetched_by_a_job(client, db, stripe_stub, worker):
    signed_in(client, db)
    sid = buy(client).rsplit("/", 1)[1]
    deliver(client, completed(stripe_stub, sid))
    worker()
    html = client.get("/billing").get_data(as_text=True)
    assert f"{stripe_stub.url}/receipts/pi_" in html and "Stripe receipt" in html


def test_without_stripe_keys_the_page_explains_setup(app, client, db):
    app.config["STRIPE_SECRET_KEY"] = None
    signed_in(client, db)
    html = client.get("/billing").get_data(as_text=True)
    assert 'data-testid="stripe-not-configured"' in html and "STRIPE_SECRET_KEY" in html
    assert "credits grant" in html and "Buy $10.00" not in html
    response = post_form(client, "/billing/checkout", {"pack": "pack_1000"}, page="/billing")
    assert response.status_code == 303 and response.headers["Location"].endswith("/billing")


def test_members_and_viewers_cannot_open_billing(client, db):
    _u, workspace_id, _secret = owner_with_key(db)
    with db.sessionmaker() as s:
        add_member(s, workspace_id, "member@example.com", "member")
    login(client, "member@example.com")
    assert client.get("/billing").status_code == 403
    assert client.get("/billing/ledger.csv").status_code == 403


def test_ledger_filters_paging_and_formula_safe_csv(client, db, stripe_stub):
    workspace_id = signed_in(client, db)
    with db.session() as s:
        ledger.grant(s, workspace_id, 2_000_000, kind="promo", reason="=HYPERLINK(\"x\")",
                     idempotency_key="evil")
        for i in range(30):
            ledger.grant(s, workspace_id, 1_000_000, kind="promo", reason=f"bonus {i}",
                         idempotency_key=f"bonus-{i}")
    first = client.get("/billing").get_data(as_text=True)
    assert first.count('data-testid="ledger-row"') == 25 and 'data-testid="ledger-next"' in first
    nxt = first.split('data-testid="ledger-next"')[0].rsplit('href="', 1)[1].split('"')[0]
    second = client.get(nxt.replace("&amp;", "&"), headers={"HX-Request": "true"})
    assert second.get_data(as_text=True).count('data-testid="ledger-row"') == 7
    none = client.get("/billing/ledger?kind=reserve").get_data(as_text=True)
    assert "No ledger entries match." in none
    response = client.get("/billing/ledger.csv?kind=grant")
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 32
    evil = next(r for r in rows if "HYPERLINK" in r["reason"])
    assert evil["reason"].startswith("'=")
    assert evil["available_change"] == "2.000000"


def test_negative_amounts_stay_numbers_in_csv():
    from batchrouter.statements import safe_cell

    assert safe_cell("-2.000000") == "-2.000000"
    assert safe_cell("-cmd|' /C calc'!A0") == "'-cmd|' /C calc'!A0"
    assert safe_cell("+1+1") == "'+1+1" and safe_cell("@SUM(A1)") == "'@SUM(A1)"


def low_balance_emails(db):
    return read(db, lambda s: s.scalars(select(EmailMessage).where(
        EmailMessage.template == "low_balance")).all())


def test_low_balance_warning_once_per_crossing(app, client, db, stripe_stub):
    workspace_id = signed_in(client, db)
    post_form(client, "/billing/settings", {"billing_email": "ap@example.com",
                                            "low_balance_threshold": "4.00"}, page="/billing")
    from jobs import runtime
    from jobs.billing import check_low_balances
    runtime.install(app)
    with db.session() as s:
        ledger.reserve(s, workspace_id, "bat_low", 2_000_000)  # $3 left < $4
    from jobs.billing import low_balance_candidates
    with db.sessionmaker() as s:
        assert low_balance_candidates(s, app.config) == [workspace_id]
    check_low_balances()
    check_low_balances()
    [mail] = low_balance_emails(db)
    assert mail.to == "ap@example.com" and "$3.00" in mail.text
    assert 'data-testid="low-balance"' in client.get("/billing").get_data(as_text=True)
    with db.session() as s:
        ledger.release(s, workspace_id, "bat_low")  # back to $5: armed again
    check_low_balances()
    with db.session() as s:
        ledger.reserve(s, workspace_id, "bat_low2", 2_000_000)
    check_low_balances()
    assert len(low_balance_emails(db)) == 2
    bad = post_form(client, "/billing/settings", {"billing_email": "nope",
                                                  "low_balance_threshold": "x"}, page="/billing")
    assert bad.status_code == 303
    assert "Enter a valid email address." in client.get("/billing").get_data(as_text=True)


def test_every_cent_of_a_batch_is_in_the_ledger_with_its_receipt(client, db, seeded_catalog,
                                                                  worker):
    from tests.lifecycle.helpers import chat_items, quote_and_create

    _u, _workspace_id, secret = owner_with_key(db)
    login(client, "buyer@example.com")
    assert "No batches yet" in client.get("/billing").get_data(as_text=True)
    _q, batch = quote_and_create(client, secret, chat_items(3))
    worker()
    page = client.get("/billing").get_data(as_text=True)
    assert 'data-testid="batch-receipt-row"' in page
    assert f'/batches/{batch["id"]}/receipt' in page
    rows = client.get(f"/v1/billing/ledger?batch_id={batch['id']}",
                      headers={"Authorization": f"Bearer {secret}"}).get_json()["data"]
    kinds = sorted({r["kind"] for r in rows})
    assert "reserve" in kinds and "settle" in kinds and "release" in kinds
    from decimal import Decimal
    net = sum(Decimal(r["available_change"]) for r in rows)
    spent = sum(Decimal(r["spent_change"]) for r in rows)
    assert net == -spent  # what left available is exactly what was spent
    assert sum(Decimal(r["reserved_change"]) for r in rows) == 0
    filtered = client.get(f"/billing/ledger?batch_id={batch['id']}").get_data(as_text=True)
    assert filtered.count('data-testid="ledger-row"') == len(rows)
