"""Daily reconciliation of Stripe Checkout Sessions with purchases and grants (SPEC §8).

Reads the recent sessions from Stripe, applies a paid session's missing grant (through the
same once-per-session path as the webhook), closes expired purchases, and reports purchase
grants no paid session explains. Each run is stored for the operator page.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from batchrouter import billing, money, stripe_api
from batchrouter.db import Database, utcnow
from batchrouter.errors import DomainError
from batchrouter.models import CreditLot, LedgerTransaction, Purchase, ReconciliationRun

log = logging.getLogger(__name__)


def run(db: Database, config) -> ReconciliationRun:
    """One reconciliation pass; every session is applied in its own short transaction."""
    with db.session() as session:
        record = ReconciliationRun()
        session.add(record)
    findings, checked, applied = [], 0, 0
    status = "ok"
    if not stripe_api.is_configured(config):
        status = "skipped"
        findings.append({"kind": "not_configured",
                         "message": "STRIPE_SECRET_KEY is not set: nothing to compare."})
    else:
        since = utcnow() - timedelta(days=config["BATCHROUTER_RECONCILE_DAYS"])
        try:
            checked, applied, paid = _apply_sessions(db, config, since, findings)
            with db.session() as session:
                findings.extend(unexplained_grants(session, since, paid))
        except DomainError as exc:
            status = "failed"
            findings.append({"kind": "stripe_error", "message": exc.message})
            log.warning("reconciliation failed: %s", exc.message)
    if status == "ok" and any(f["kind"] != "grant_applied" for f in findings):
        status = "problems"
    with db.session() as session:
        record = session.get(ReconciliationRun, record.id)
        record.finished_at, record.status = utcnow(), status
        record.sessions_checked, record.grants_applied, record.findings = checked, applied, findings
    return record


def _apply_sessions(db: Database, config, since, findings: list) -> tuple[int, int, set]:
    from calendar import timegm

    checked, applied, paid = 0, 0, set()
    for checkout in stripe_api.recent_sessions(config, timegm(since.timetuple())):
        if not (checkout.get("metadata") or {}).get("purchase_id"):
            continue  # another product's session on the same Stripe account
        checked += 1
        if billing.is_paid(checkout):
            paid.add(checkout["id"])
        with db.session() as session:
            purchase, outcome = billing.apply_session(session, config, checkout)
        if outcome == "granted":
            applied += 1
            findings.append({"kind": "grant_applied", "session_id": checkout["id"],
                             "purchase_id": purchase.id, "workspace_id": purchase.workspace_id,
                             "message": f"Paid session had no grant; granted "
                                        f"{money.to_display(purchase.amount)} once."})
        elif outcome.startswith("not granted"):
            findings.append({"kind": "amount_mismatch", "session_id": checkout["id"],
                             "purchase_id": purchase.id, "message": outcome})
    return checked, applied, paid


def unexplained_grants(session: Session, since, paid: set) -> list[dict]:
    """Purchase-kind grants in the window whose Checkout Session Stripe does not show paid."""
    rows = session.execute(
        select(CreditLot, LedgerTransaction.idempotency_key)
        .join(LedgerTransaction, LedgerTransaction.id == CreditLot.transaction_id)
        .where(CreditLot.kind == "purchase", CreditLot.created_at >= since)).all()
    found = []
    for lot, key in rows:
        session_id = key.removeprefix("stripe-session:") if key.startswith("stripe-session:") \
            else None
        if session_id in paid:
            continue
        purchase = session.scalars(select(Purchase).where(
            Purchase.stripe_session_id == session_id)).first() if session_id else None
        found.append({"kind": "grant_without_payment", "session_id": session_id,
                      "purchase_id": purchase.id if purchase else None,
                      "workspace_id": lot.workspace_id,
                      "message": f"{money.to_display(lot.amount)} of purchased credit granted "
                                 f"without a paid Checkout Session "
                                 f"({session_id or 'no session'})."})
    return found


def last_run(session: Session) -> ReconciliationRun | None:
    return session.scalars(select(ReconciliationRun)
                           .order_by(ReconciliationRun.id.desc()).limit(1)).first()
