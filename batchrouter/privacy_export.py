"""Access and export requests (SPEC §10): everything held about one person, as JSON files in
a ZIP with a README. Any table with a user reference that has no dedicated section is still
exported through the generic pass, so new tables cannot be forgotten."""
from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import date, datetime

from sqlalchemy import Table, or_, select
from sqlalchemy.orm import Session

from batchrouter import consent
from batchrouter.db import utcnow
from batchrouter.models import (
    AnalyticsEvent,
    AnalyticsPageView,
    ApiKey,
    Base,
    Batch,
    ConsentRecord,
    CreditLot,
    EmailMessage,
    Feedback,
    Invitation,
    Item,
    LedgerEntry,
    LedgerTransaction,
    Membership,
    PrivacyRequest,
    SecurityEvent,
    SupportMessage,
    User,
    UserSession,
    Workspace,
)

_USER_COLUMN = re.compile(r"(^|_)user_id$|_by_id$|^created_by$|^submitted_by$")
_SECRET_COLUMN = re.compile(r"password|secret|token|_hash$")
ITEM_LIMIT = 100_000
# Workspace tables that are machinery, not data about a person (price locks, lot holds).
WORKSPACE_SKIP = {"quotes", "reservations", "ledger_accounts", "idempotency_records"}


def user_reference_columns(table: Table) -> list[str]:
    """Columns of `table` that point at a user (a foreign key to users, or named for one)."""
    names = []
    for column in table.columns:
        fk_user = any(fk.column.table.name == "users" for fk in column.foreign_keys)
        if fk_user or _USER_COLUMN.search(column.name):
            names.append(column.name)
    return names


def _plain(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _row(table: Table, row) -> dict:
    return {c.name: _plain(row._mapping[c]) for c in table.columns
            if not _SECRET_COLUMN.search(c.name)}


def _rows(session: Session, model, *where) -> list[dict]:
    table = model.__table__
    return [_row(table, r) for r in session.execute(select(table).where(*where))]


def _named_rows(session: Session, name: str, where) -> list[dict]:
    """Rows of a table known by name only (billing tables live in another area's module)."""
    table = Base.metadata.tables.get(name)
    if table is None:
        return []
    return [_row(table, r) for r in session.execute(select(table).where(where(table)))]


def _owned_workspaces(session: Session, user_id: str) -> list[str]:
    return list(session.scalars(select(Membership.workspace_id)
                                .where(Membership.user_id == user_id, Membership.role == "owner")))


def _batches(session: Session, user_id: str, owned: list[str]) -> list[dict]:
    """Batches of workspaces they own or made with their keys, with items where kept."""
    keys = select(ApiKey.id).where(ApiKey.created_by_id == user_id)
    batches = session.scalars(select(Batch).where(or_(Batch.workspace_id.in_(owned),
                                                      Batch.created_by_key_id.in_(keys)))
                              .order_by(Batch.created_at)).all()
    out = []
    for batch in batches:
        body = _row(Batch.__table__, session.execute(select(Batch.__table__)
                                                     .where(Batch.id == batch.id)).one())
        if isinstance(body.get("webhook"), dict):
            body["webhook"] = {k: v for k, v in body["webhook"].items() if "secret" not in k}
        items = session.execute(select(Item.customer_item_id, Item.status, Item.line,
                                       Item.result, Item.error)
                                .where(Item.batch_id == batch.id).order_by(Item.seq)
                                .limit(ITEM_LIMIT)).all()
        body["items"] = [{"custom_id": i.customer_item_id, "status": i.status,
                          "input": _plain(i.line) or None, "output": i.result, "error": i.error}
                         for i in items]
        out.append(body)
    return out


def _ledger(session: Session, owned: list[str]) -> dict:
    txns = select(LedgerTransaction.id).where(LedgerTransaction.workspace_id.in_(owned))
    return {"transactions": _rows(session, LedgerTransaction,
                                  LedgerTransaction.workspace_id.in_(owned)),
            "entries": _rows(session, LedgerEntry, LedgerEntry.transaction_id.in_(txns))}


def collect(session: Session, email: str, user_id: str | None) -> dict[str, object]:
    """file name (without .json) → data; `tables` maps each source table to its file."""
    uid = user_id or "—no-account—"
    owned = _owned_workspaces(session, uid)
    visitors = consent.visitor_ids_of_user(session, uid)
    files: dict[str, object] = {
        "account": _rows(session, User, User.id == uid),
        "memberships": _rows(session, Membership, Membership.user_id == uid),
        "workspaces_owned": _rows(session, Workspace, Workspace.id.in_(owned)),
        "sessions": _rows(session, UserSession, UserSession.user_id == uid),
        "api_keys": _rows(session, ApiKey, ApiKey.created_by_id == uid),
        "security_log": _rows(session, SecurityEvent, or_(SecurityEvent.user_id == uid,
                                                          SecurityEvent.email == email)),
        "consent_records": _rows(session, ConsentRecord, ConsentRecord.user_id == uid),
        "analytics": {"page_views": _rows(session, AnalyticsPageView,
                                          AnalyticsPageView.visitor_id.in_(visitors)),
                      "events": _rows(session, AnalyticsEvent,
                                      AnalyticsEvent.visitor_id.in_(visitors))},
        "billing": {"account_email": email,
                    "workspace_billing": _named_rows(session, "workspace_billing",
                                                     lambda t: t.c.workspace_id.in_(owned)),
                    "purchases": _named_rows(session, "purchases",
                                             lambda t: or_(t.c.workspace_id.in_(owned),
                                                           t.c.created_by_id == uid)),
                    "credit_lots": _rows(session, CreditLot, CreditLot.workspace_id.in_(owned))},
        "ledger": _ledger(session, owned),
        "batches": _batches(session, uid, owned),
        "feedback": _rows(session, Feedback, Feedback.created_by == uid),
        "invitations": _rows(session, Invitation, or_(Invitation.email == email,
                                                      Invitation.invited_by_id == uid,
                                                      Invitation.accepted_by_id == uid)),
        "support_messages": _rows(session, SupportMessage, or_(SupportMessage.email == email,
                                                               SupportMessage.user_id == uid)),
        "privacy_requests": _rows(session, PrivacyRequest, PrivacyRequest.email == email),
        "emails": _rows(session, EmailMessage, EmailMessage.to == email),
    }
    tables = {"users": "account", "memberships": "memberships", "workspaces": "workspaces_owned",
              "user_sessions": "sessions", "api_keys": "api_keys",
              "security_events": "security_log", "consent_records": "consent_records",
              "analytics_page_views": "analytics", "analytics_events": "analytics",
              "credit_lots": "billing", "purchases": "billing", "workspace_billing": "billing",
              "ledger_transactions": "ledger",
              "ledger_entries": "ledger", "batches": "batches", "items": "batches",
              "item_feedback": "feedback", "invitations": "invitations",
              "support_messages": "support_messages", "privacy_requests": "privacy_requests",
              "email_messages": "emails"}
    for table in Base.metadata.sorted_tables:
        columns = user_reference_columns(table)
        if table.name in tables or not columns:
            continue
        where = or_(*(table.c[name] == uid for name in columns))
        files[f"tables/{table.name}"] = [_row(table, r)
                                         for r in session.execute(select(table).where(where))]
        tables[table.name] = f"tables/{table.name}"
    for table in Base.metadata.sorted_tables:
        # Anything else a workspace they own holds (webhook endpoints, purchases, …).
        if table.name in tables or table.name in WORKSPACE_SKIP or "workspace_id" not in table.c:
            continue
        files[f"workspaces/{table.name}"] = [
            _row(table, r) for r in session.execute(
                select(table).where(table.c.workspace_id.in_(owned)).limit(ITEM_LIMIT))]
        tables[table.name] = f"workspaces/{table.name}"
    files["index"] = {"email": email, "generated_at": utcnow().isoformat() + "Z",
                      "tables": tables}
    return files


README = """Your data from {operator}
{line}

Generated {when} UTC for {email}.

Each .json file holds one kind of record; index.json says which of our database tables
each file comes from. Times are UTC. Secrets (password and key hashes, tokens) are never
included. Batch items carry their input and output where we still keep them (see the
retention periods in our privacy policy).

account.json          your account
memberships.json      your workspaces and roles; workspaces_owned.json those you own
sessions.json         console sign-ins
api_keys.json         API keys you created (metadata only)
security_log.json     security events about you
consent_records.json  your cookie choices; analytics.json what was counted with consent
billing.json          billing emails, purchases and credit lots of workspaces you own
ledger.json           credit ledger of workspaces you own
batches.json          batches of workspaces you own or made with your keys (with webhook settings)
feedback.json, invitations.json, support_messages.json, privacy_requests.json, emails.json
tables/*.json         any other record that refers to you
workspaces/*.json     other records of workspaces you own (files, webhook endpoints, …)

Questions: {contact}
"""


def build_zip(files: dict[str, object], *, email: str, operator: str, contact: str) -> bytes:
    buffer = io.BytesIO()
    title = f"Your data from {operator}"
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.txt", README.format(operator=operator, line="=" * len(title),
                                                     when=f"{utcnow():%Y-%m-%d %H:%M}",
                                                     email=email, contact=contact))
        for name, data in files.items():
            archive.writestr(f"{name}.json", json.dumps(data, indent=2, default=str,
                                                        ensure_ascii=False))
    return buffer.getvalue()
