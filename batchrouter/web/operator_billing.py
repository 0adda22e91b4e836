"""Operator billing page: reconciliation runs, flagged workspaces, purchases and refunds,
promo grants and every grant (SPEC §8, §9)."""
from __future__ import annotations

import uuid
from datetime import datetime, time

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select

from batchrouter import accounts, billing, ledger, money, queue, reconcile
from batchrouter.errors import DomainError, ValidationFailed
from batchrouter.extensions import client_ip, db_session
from batchrouter.models import (
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    Purchase,
    Workspace,
    WorkspaceBilling,
)
from batchrouter.records import log_security
from batchrouter.web.operator import operator_required

bp = Blueprint("operator_billing", __name__, url_prefix="/operator/billing")

GRANT_KINDS = ("grant", "refund", "reverse", "expire")


def _back(message: str, category: str = "success"):
    flash(message, category)
    return redirect(url_for("operator_billing.index"), code=303)


@bp.get("")
@operator_required
def index():
    session = db_session()
    purchases = list(session.scalars(select(Purchase).order_by(Purchase.created_at.desc())
                                     .limit(50)))
    raw_page = request.args.get("page", "1")
    page = max(int(raw_page), 1) if raw_page.isdigit() else 1
    grants = list(session.scalars(
        select(LedgerTransaction).where(LedgerTransaction.kind.in_(GRANT_KINDS))
        .order_by(LedgerTransaction.created_at.desc(), LedgerTransaction.id.desc())
        .offset((page - 1) * 50).limit(51)))
    flagged = list(session.scalars(select(WorkspaceBilling).where(
        WorkspaceBilling.flagged_at.is_not(None)).order_by(WorkspaceBilling.flagged_at.desc())))
    return render_template("operator/billing.html", run=reconcile.last_run(session),
                           purchases=purchases,
                           refundable={p.id: billing.refundable(session, p) for p in purchases},
                           grants=grants[:50], more=len(grants) > 50, page=page,
                           amounts=_net_amounts(session, [t.id for t in grants[:50]]),
                           flagged=flagged, nonce=uuid.uuid4().hex)


def _net_amounts(session, txn_ids: list[str]) -> dict:
    """What each transaction moved on its workspace's accounts (net, micro-dollars)."""
    rows = session.execute(
        select(LedgerEntry.transaction_id, func.sum(LedgerEntry.amount))
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .where(LedgerEntry.transaction_id.in_(txn_ids), LedgerAccount.workspace_id.is_not(None))
        .group_by(LedgerEntry.transaction_id)).all() if txn_ids else []
    return {txn_id: int(total) for txn_id, total in rows}


@bp.post("/reconcile")
@operator_required
def run_reconcile():
    """Queue a reconciliation run now (the daily one runs anyway)."""
    session = db_session()
    queue.add_outbox(session, "jobs.billing.reconcile")
    session.commit()
    return _back("Reconciliation queued; reload in a moment for its report.", "info")


@bp.post("/purchases/<purchase_id>/refund")
@operator_required
def refund(purchase_id: str):
    """Refund a purchase's unspent credit through Stripe (idempotent) and reverse it."""
    session = db_session()
    try:
        amount = billing.refund_unspent(session, current_app.config, purchase_id,
                                        actor_id=current_user.id, ip=client_ip())
    except DomainError as exc:
        session.rollback()
        return _back(exc.message, "error")
    session.commit()
    return _back(f"Refunded {money.to_display(amount)} of purchase {purchase_id}.")


def _workspace_id(session, target: str) -> str:
    target = target.strip()
    if "@" in target:
        user = accounts.find_user_by_email(session, accounts.normalize_email(target))
        if user is None or not accounts.memberships_of(session, user.id):
            raise ValidationFailed(f"No user with a workspace has the email {target}.")
        return accounts.memberships_of(session, user.id)[0].workspace_id
    if session.get(Workspace, target) is None:
        raise ValidationFailed("Give a workspace id (org_…) or a member's email.")
    return target


def _expiry(value: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        day = datetime.fromisoformat(value.strip()).date()
    except ValueError as exc:
        raise ValidationFailed("The expiry is a date like 2027-01-31.") from exc
    return datetime.combine(day, time.max.replace(microsecond=0))


@bp.post("/grants")
@operator_required
def grant():
    """Grant promo credits with a reason and an optional expiry (a double submit grants once)."""
    session = db_session()
    form = request.form
    try:
        workspace_id = _workspace_id(session, form.get("workspace", ""))
        reason = form.get("reason", "").strip()
        if not reason:
            raise ValidationFailed("Say why the credits are granted.")
        try:
            amount = money.parse(form.get("amount", ""))
        except money.MoneyFormatError as exc:
            raise ValidationFailed("The amount is in dollars, like 25.00.") from exc
        ledger.grant(session, workspace_id, amount, kind="promo", reason=reason[:300],
                     expires_at=_expiry(form.get("expires", "")), created_by_id=current_user.id,
                     idempotency_key=f"operator-grant:{form.get('nonce') or uuid.uuid4().hex}")
    except DomainError as exc:
        session.rollback()
        return _back(exc.message, "error")
    log_security(session, "credits_granted", user_id=current_user.id, ip=client_ip(),
                 workspace_id=workspace_id, amount=money.to_wire(amount), reason=reason[:300],
                 via="console")
    session.commit()
    return _back(f"Granted {money.to_display(amount)} to {workspace_id}.")


@bp.post("/workspaces/<workspace_id>/clear-flag")
@operator_required
def clear_flag(workspace_id: str):
    session = db_session()
    settings = session.get(WorkspaceBilling, workspace_id)
    if settings is not None:
        settings.flagged_at, settings.flag_reason = None, None
        session.commit()
    return _back(f"Review of {workspace_id} closed.")
