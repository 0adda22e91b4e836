"""Billing jobs: daily Stripe reconciliation, receipt links, low-balance checks."""
from __future__ import annotations

from sqlalchemy import select

from jobs import runtime


def reconcile() -> dict:
    from batchrouter import reconcile as rec

    run = rec.run(runtime.runtime().db, runtime.config())
    return {"status": run.status, "checked": run.sessions_checked, "applied": run.grants_applied}


def fetch_receipt(purchase_id: str) -> str | None:
    """Store the Stripe receipt URL of a granted purchase (best effort; the link is a nicety)."""
    from batchrouter import stripe_api
    from batchrouter.models import Purchase

    db = runtime.runtime().db
    with db.session() as session:
        purchase = session.get(Purchase, purchase_id)
        if purchase is None or purchase.receipt_url or not purchase.payment_intent_id:
            return None
        intent_id = purchase.payment_intent_id
    _charge, url = stripe_api.receipt_url(runtime.config(), intent_id)
    with db.session() as session:
        session.get(Purchase, purchase_id).receipt_url = url
    return url


def check_low_balances() -> int:
    """Email workspaces whose credit fell below their threshold (once per crossing)."""
    from batchrouter import billing
    db, config = runtime.runtime().db, runtime.config()
    with db.session() as session:
        ids = low_balance_candidates(session, config)
    below = 0
    for workspace_id in ids:
        with db.session() as session:
            below += billing.check_low_balance(session, config, workspace_id)
    return below


def low_balance_candidates(session, config) -> list[str]:
    """Workspaces that may have crossed the threshold either way: below the highest threshold
    in use, or warned and maybe back above (everyone else is skipped without a write)."""
    from sqlalchemy import func

    from batchrouter.models import LedgerAccount, WorkspaceBilling

    highest = max(config["BATCHROUTER_LOW_BALANCE_THRESHOLD"],
                  session.scalar(select(func.max(WorkspaceBilling.low_balance_threshold))) or 0)
    below = session.scalars(select(LedgerAccount.workspace_id).where(
        LedgerAccount.kind == "available", LedgerAccount.workspace_id.is_not(None),
        LedgerAccount.balance < highest))
    warned = session.scalars(select(WorkspaceBilling.workspace_id).where(
        WorkspaceBilling.low_balance_notified_at.is_not(None)))
    return sorted(set(below) | set(warned))
