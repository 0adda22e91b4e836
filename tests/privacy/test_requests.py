"""Privacy requests end to end through the console and the API (SPEC §10): confirmation by
email, the operator queue with due dates and extensions, export, deletion, restriction,
correction and withdrawal — each security-logged and answered by email."""
from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import datetime

import pytest
from sqlalchemy import func, select

from batchrouter import privacy
from batchrouter.models import (
    AnalyticsPageView,
    Base,
    ConsentRecord,
    EmailMessage,
    LedgerEntry,
    PrivacyRequest,
    SecurityEvent,
    User,
)
from batchrouter.privacy_export import user_reference_columns
from tests.factories import (
    PASSWORD,
    bearer,
    get_csrf,
    login,
    make_key,
    make_user,
    read,
    workspace_of,
)
from tests.privacy.helpers import confirm, confirm_link, latest_request, operator_post, submit

pytestmark = pytest.mark.pg


def html(response) -> str:
    return response.get_data(as_text=True)


def emails_to(db, address) -> list[str]:
    return read(db, lambda s: list(s.scalars(select(EmailMessage.subject)
                                             .where(EmailMessage.to == address)
                                             .order_by(EmailMessage.created_at))))


def kinds(db) -> list[str]:
    return read(db, lambda s: list(s.scalars(select(SecurityEvent.kind)
                                             .order_by(SecurityEvent.created_at))))


@pytest.fixture
def operator(session):
    return make_user(session, "op@example.com", operator=True)


def test_add_months_clamps_to_the_month_end():
    assert privacy.add_months(datetime(2026, 1, 31, 9), 1) == datetime(2026, 2, 28, 9)
    assert privacy.add_months(datetime(2026, 11, 27), 2) == datetime(2027, 1, 27)


def test_the_answer_never_reveals_whether_an_account_exists(client, session, db):
    make_user(session)
    known = html(submit(client, "access", "owner@example.com"))
    unknown = html(submit(client, "access", "stranger@example.com"))
    strip = lambda page: re.sub(r"\S+@example\.com|value=\"[^\"]+\"|\"X-CSRFToken\": \"[^\"]+\"",
                                "", page)
    assert strip(known) == strip(unknown) and "Check your inbox" in known
    # Both addresses get the same confirmation; nothing enters the queue yet.
    assert emails_to(db, "stranger@example.com") == ["Confirm your privacy request"]
    assert read(db, lambda s: set(s.scalars(select(PrivacyRequest.status)))) == {"unconfirmed"}


def test_bad_input_gets_a_message_not_a_500(client):
    response = submit(client, "sell_my_data")
    assert response.status_code == 422 and "Choose what you would like" in html(response)
    assert submit(client, "access", "not an email").status_code == 422


def test_form_needs_csrf(client):
    response = client.post("/privacy/request", data={"kind": "access",
                                                     "email": "a@example.com"})
    assert response.status_code == 400


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_PRIVACY_REQUEST_LIMIT": "2 per hour"}],
                         indirect=True)
def test_form_is_rate_limited(client):
    assert submit(client, "access").status_code == 200
    assert submit(client, "access").status_code == 200
    assert submit(client, "access").status_code == 429


def test_confirm_link_is_single_use_and_sets_the_due_date(client, session, db, operator):
    user = make_user(session)
    submit(client, "access")
    link = confirm_link(db)
    path = "/" + link.split("/", 3)[3]
    assert "Confirm request" in html(client.get(path))  # a GET changes nothing
    assert latest_request(db).status == "unconfirmed"
    response = confirm(client, db)
    assert response.status_code == 200 and "Request confirmed" in html(response)
    found = latest_request(db)
    assert found.status == "open" and found.user_id == user.id
    assert found.due_at == privacy.add_months(found.received_at, 1)
    again = client.post(path, data={"csrf_token": get_csrf(client, "/privacy/request")})
    assert again.status_code == 400
    assert "We received your privacy request" in emails_to(db, "owner@example.com")
    login(client, "op@example.com")
    queue = html(client.get("/operator/privacy"))
    assert found.id in queue and found.due_at.strftime("%Y-%m-%d") in queue


def test_extension_once_with_reason_emailed_and_overdue_highlight(client, session, db,
                                                                   operator):
    make_user(session)
    submit(client, "correction")
    confirm(client, db)
    found = latest_request(db)
    login(client, "op@example.com")
    assert operator_post(client, found.id, "extend", months="2", reason="").status_code == 303
    assert latest_request(db).extended_at is None  # a reason is required
    operator_post(client, found.id, "extend", months="2", reason="Large archive")
    extended = latest_request(db)
    assert extended.due_at == privacy.add_months(found.due_at, 2)
    assert "We need more time for your privacy request" in emails_to(db, "owner@example.com")
    operator_post(client, found.id, "extend", months="1", reason="again")
    assert latest_request(db).due_at == extended.due_at  # only once
    with db.session() as s:
        s.get(PrivacyRequest, found.id).due_at = datetime(2020, 1, 1)
    assert "overdue" in html(client.get("/operator/privacy"))
    operator_post(client, found.id, "note", text="Called the customer")
    assert "Called the customer" in html(client.get(f"/operator/privacy/{found.id}"))
    assert {"privacy_request_extended", "privacy_request_noted"} <= set(kinds(db))


def test_export_zip_holds_everything_about_the_person(client, session, db, operator, worker):
    user = make_user(session)
    make_key(session, user)
    with db.session() as s:
        s.add(ConsentRecord(consent_id="cns_x", user_id=user.id, analytics=True,
                            policy_version="v", action="accept_all", visitor_id="vis_x"))
        s.add(AnalyticsPageView(day=datetime(2026, 11, 1).date(), route="/models",
                                visitor_id="vis_x", views=3))
    submit(client, "export")
    confirm(client, db)
    found = latest_request(db)
    login(client, "op@example.com")
    operator_post(client, found.id, "perform")
    assert latest_request(db).status == "in_progress"
    assert "We are working on your privacy request" in emails_to(db, "owner@example.com")
    worker()
    done = latest_request(db)
    assert done.status == "done" and done.export_ready_at
    text = read(db, lambda s: s.scalars(select(EmailMessage.text).where(
        EmailMessage.to == "owner@example.com", EmailMessage.subject ==
        "Your privacy request is done")).one())
    url = re.search(r"http://\S+/privacy/export/\S+", text).group(0)
    client.get("/logout")
    response = client.get("/" + url.split("/", 3)[3])
    assert response.status_code == 200 and response.mimetype == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    names = set(archive.namelist())
    assert {"README.txt", "account.json", "api_keys.json", "security_log.json",
            "consent_records.json", "ledger.json", "batches.json", "index.json"} <= names
    account = json.loads(archive.read("account.json"))
    assert account[0]["email"] == "owner@example.com" and "password_hash" not in account[0]
    assert "secret_hash" not in archive.read("api_keys.json").decode()
    assert json.loads(archive.read("analytics.json"))["page_views"][0]["views"] == 3
    assert json.loads(archive.read("ledger.json"))["entries"]  # the starter grant
    # Every table that refers to a user is in the archive.
    index = json.loads(archive.read("index.json"))["tables"]
    referring = {t.name for t in Base.metadata.sorted_tables if user_reference_columns(t)}
    referring |= {"users", "privacy_requests", "email_messages", "support_messages"}
    assert referring <= set(index), referring - set(index)
    assert all(f"{index[t]}.json" in names for t in referring)
    # …and so is every other table a workspace they own holds data in.
    held = {t.name for t in Base.metadata.sorted_tables if "workspace_id" in t.c}
    assert held - {"quotes", "reservations", "ledger_accounts", "idempotency_records"} \
        <= set(index)
    billing = json.loads(archive.read("billing.json"))
    assert billing["account_email"] == "owner@example.com" and billing["credit_lots"]
    assert index.get("purchases", "billing") == "billing"
    assert client.get("/privacy/export/not-a-token").status_code == 403


def test_deletion_keeps_the_ledger_and_stops_sign_in(client, session, db, operator):
    user = make_user(session)
    workspace = workspace_of(session, user)
    entries = read(db, lambda s: s.scalar(select(func.count()).select_from(LedgerEntry)))
    submit(client, "deletion")
    confirm(client, db)
    found = latest_request(db)
    login(client, "op@example.com")
    response = operator_post(client, found.id, "perform")
    assert response.status_code == 303
    page = html(client.get(f"/operator/privacy/{found.id}"))
    assert "ledger" in page and "accounting and tax law" in page
    done = latest_request(db)
    assert done.status == "done" and {k["class"] for k in done.outcome["kept"]} >= {
        "ledger", "security_log"}
    assert read(db, lambda s: s.scalar(select(func.count()).select_from(LedgerEntry))) == entries
    erased = read(db, lambda s: s.get(User, user.id))
    assert erased.email.endswith("@deleted.invalid") and erased.password_hash is None
    assert "Your privacy request is done" in emails_to(db, "owner@example.com")
    other = client.application.test_client()
    token = get_csrf(other, "/login")
    refused = other.post("/login", data={"email": "owner@example.com", "password": PASSWORD,
                                         "csrf_token": token})
    assert refused.status_code != 303
    assert "privacy_account_erased" in kinds(db)
    assert workspace  # the workspace's ledger rows above are the kept class


def test_restriction_pauses_new_batches_until_lifted(client, session, db, operator):
    user = make_user(session)
    _, secret = make_key(session, user)
    submit(client, "restriction")
    confirm(client, db)
    found = latest_request(db)
    login(client, "op@example.com")
    operator_post(client, found.id, "perform")
    response = client.application.test_client().post(
        "/v1/batches", json={"quote_id": "qlock_x"}, headers=bearer(secret))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "processing_restricted"
    operator_post(client, found.id, "lift")
    response = client.application.test_client().post(
        "/v1/batches", json={"quote_id": "qlock_x"}, headers=bearer(secret))
    assert response.status_code == 404  # past the restriction: the quote does not exist


def test_withdraw_consent_updates_records_and_erases_analytics(client, session, db, operator):
    user = make_user(session)
    with db.session() as s:
        s.add(ConsentRecord(consent_id="cns_y", user_id=user.id, analytics=True,
                            policy_version="v", action="accept_all", visitor_id="vis_y"))
        s.add(AnalyticsPageView(day=datetime(2026, 11, 1).date(), route="/", visitor_id="vis_y",
                                views=2))
    submit(client, "withdraw_consent")
    confirm(client, db)
    login(client, "op@example.com")
    operator_post(client, latest_request(db).id, "perform")
    assert read(db, lambda s: s.scalar(select(func.count()).select_from(AnalyticsPageView))) == 0
    latest = read(db, lambda s: s.scalars(select(ConsentRecord).order_by(
        ConsentRecord.id.desc())).first())
    assert (latest.analytics, latest.action) == (False, "privacy_request")


def test_correction_and_rejection(client, session, db, operator):
    user = make_user(session)
    submit(client, "correction")
    confirm(client, db)
    found = latest_request(db)
    login(client, "op@example.com")
    operator_post(client, found.id, "perform", name="Ada Lovelace", email="")
    assert read(db, lambda s: s.get(User, user.id).name) == "Ada Lovelace"
    submit(client, "objection", "stranger@example.com")
    confirm(client, db, "stranger@example.com")
    other = latest_request(db)
    operator_post(client, other.id, "perform")
    assert latest_request(db).status == "open"  # no account: the action is refused
    operator_post(client, other.id, "reject", reply="We hold no data about this address.")
    assert latest_request(db).status == "rejected"
    assert "We could not carry out your privacy request" in emails_to(db, "stranger@example.com")


def test_console_privacy_center_is_prefilled(client, session):
    make_user(session)
    login(client)
    page = html(client.get("/account/privacy"))
    assert 'value="owner@example.com"' in page and "Your requests" in page


def test_only_operators_see_the_queue(client, session):
    make_user(session)
    login(client)
    assert client.get("/operator/privacy").status_code == 403


def test_restriction_holds_for_every_surface_that_passes_a_key(client, session, db, app,
                                                               seeded_catalog):
    from batchrouter import batches, quotes
    from batchrouter.errors import Forbidden
    from batchrouter.models import ProcessingRestriction
    from tests.lifecycle.helpers import chat_items, create, quote

    user = make_user(session)
    key, secret = make_key(session, user)
    items = chat_items(2)
    q = quote(client, secret, items)
    with db.session() as s:
        s.add(ProcessingRestriction(user_id=user.id))
    with db.session() as s:  # the domain call itself refuses, whatever view calls it
        found = quotes.get_quote(s, key.workspace_id, q["id"])
        source = batches.request_lines(s, app.extensions["batchrouter"].storage,
                                       key.workspace_id, {"items": items}, found)
        with pytest.raises(Forbidden) as refused:
            batches.create_batch(s, quote=found, source=source, key_id=key.id)
        assert refused.value.code == "processing_restricted"
    with db.session() as s:
        s.execute(ProcessingRestriction.__table__.update().values(lifted_at=datetime(2026, 1, 1)))
    assert create(client, secret, items, q["id"]).status_code == 201
