"""Credit purchases through Stripe Checkout, refunds, disputes and billing settings (SPEC §8).

Money rules: credits are granted only for a Checkout Session Stripe says is paid, under the
ledger key `stripe-session:<session id>` (so once per session, whoever asks: webhook, retry,
reconciliation); the success redirect only reads. Reversals take back at most what the
purchase's lot still holds and say what could not be recovered.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from batchrouter import email as mail
from batchrouter import ledger, money, queue, stripe_api
from batchrouter.db import utcnow
from batchrouter.errors import Conflict, NotFound, ValidationFailed
from batchrouter.ids import new_id
from batchrouter.models import CreditLot, Membership, Purchase, User, Workspace, WorkspaceBilling
from batchrouter.records import log_security

RECEIPT_JOB = "jobs.billing.fetch_receipt"


def grant_key(session_id: str) -> str:
    return f"stripe-session:{session_id}"


def settings_of(session: Session, workspace_id: str, *, create: bool = True
                ) -> WorkspaceBilling | None:
    found = session.get(WorkspaceBilling, workspace_id)
    if found is None and create:
        found = WorkspaceBilling(workspace_id=workspace_id)
        session.add(found)
        session.flush()
    return found


def billing_recipients(session: Session, workspace_id: str) -> list[str]:
    """The workspace's billing email, or else its owners' addresses."""
    settings = settings_of(session, workspace_id, create=False)
    if settings is not None and settings.billing_email:
        return [settings.billing_email]
    return list(session.scalars(select(User.email).join(Membership, Membership.user_id == User.id)
                                .where(Membership.workspace_id == workspace_id,
                                       Membership.role == "owner")))


def start_checkout(session: Session, config, *, workspace_id: str, pack_id: str,
                   user_id: str | None) -> Purchase:
    """Create the Checkout Session for a pack and record the open purchase."""
    pack = stripe_api.find_pack(config, pack_id)
    if pack is None:
        raise ValidationFailed(f"Unknown credit pack {pack_id!r}.", code="unknown_pack",
                               details={"packs": [p.id for p in stripe_api.packs(config)]})
    purchase_id = new_id("pur")
    base = config["BASE_URL"].rstrip("/")
    recipients = billing_recipients(session, workspace_id)
    email = recipients[0] if recipients and not recipients[0].endswith(".invalid") else None
    checkout = stripe_api.create_checkout(
        config, purchase_id=purchase_id, workspace_id=workspace_id, pack=pack,
        success_url=f"{base}/billing/purchases/{purchase_id}?session_id={{CHECKOUT_SESSION_ID}}",
        cancel_url=f"{base}/billing?canceled={purchase_id}", email=email)
    purchase = Purchase(id=purchase_id, workspace_id=workspace_id, pack_id=pack.id,
                        amount=pack.amount, price_cents=pack.cents,
                        stripe_session_id=checkout["id"], checkout_url=checkout["url"],
                        created_by_id=user_id)
    session.add(purchase)
    session.flush()
    return purchase


def purchase_for_session(session: Session, config, checkout) -> Purchase | None:
    """Our purchase for a Checkout Session; recreated from its metadata if our row was never
    committed (the browser left before we saved it). Sessions not made by us → None."""
    found = session.scalars(select(Purchase)
                            .where(Purchase.stripe_session_id == checkout["id"])).first()
    if found is not None:
        return found
    meta = checkout.get("metadata") or {}
    workspace_id = meta.get("workspace_id") or checkout.get("client_reference_id")
    if not meta.get("purchase_id") or session.get(Workspace, workspace_id or "") is None:
        return None
    pack = stripe_api.find_pack(config, meta.get("pack_id", ""))
    cents = pack.cents if pack else int(checkout.get("amount_total") or 0)
    purchase = Purchase(id=meta["purchase_id"], workspace_id=workspace_id,
                        pack_id=meta.get("pack_id") or "custom", amount=cents * 10_000,
                        price_cents=cents, stripe_session_id=checkout["id"],
                        checkout_url=checkout.get("url"))
    session.add(purchase)
    session.flush()
    return purchase


def is_paid(checkout) -> bool:
    return checkout.get("status") == "complete" and checkout.get("payment_status") == "paid"


def apply_session(session: Session, config, checkout) -> tuple[Purchase | None, str]:
    """Bring our purchase in line with what Stripe says about its Checkout Session."""
    purchase = purchase_for_session(session, config, checkout)
    if purchase is None:
        return None, "not a BatchRouter purchase"
    if is_paid(checkout):
        return purchase, grant_purchase(session, config, purchase, checkout)
    if checkout.get("status") == "expired":
        return purchase, close_purchase(purchase, "expired")
    return purchase, f"not paid yet ({checkout.get('payment_status')})"


def grant_purchase(session: Session, config, purchase: Purchase, checkout) -> str:
    """Grant a paid session's credits: once, and only for the amount we sold."""
    ledger.lock_workspace(session, purchase.workspace_id)
    session.refresh(purchase)
    if purchase.status == "granted":
        return "already granted"
    if checkout.get("currency") != "usd" or checkout.get("amount_total") != purchase.price_cents:
        return (f"not granted: Stripe charged {checkout.get('amount_total')} "
                f"{checkout.get('currency')} for a {purchase.price_cents} usd pack")
    txn = ledger.grant(session, purchase.workspace_id, purchase.amount, kind="purchase",
                       reason=f"Credit pack {money.to_display(purchase.amount)} "
                              f"(purchase {purchase.id})",
                       idempotency_key=grant_key(purchase.stripe_session_id))
    now = utcnow()
    intent = checkout.get("payment_intent")
    purchase.payment_intent_id = intent if isinstance(intent, str) else (intent or {}).get("id")
    purchase.status, purchase.grant_transaction_id = "granted", txn.id
    purchase.paid_at, purchase.granted_at = purchase.paid_at or now, now
    log_security(session, "credits_purchased", workspace_id=purchase.workspace_id,
                 purchase_id=purchase.id, amount=money.to_wire(purchase.amount))
    if purchase.payment_intent_id:
        queue.add_outbox(session, RECEIPT_JOB, purchase.id)
    for to in billing_recipients(session, purchase.workspace_id):
        mail.queue_email(session, to, "credits_added",
                         {"amount": money.to_display(purchase.amount), "purchase": purchase.id,
                          "link": f"{config['BASE_URL'].rstrip('/')}/billing"},
                         idempotency_key=f"credits-added:{purchase.id}:{to}")
    check_low_balance(session, config, purchase.workspace_id)
    return "granted"


def close_purchase(purchase: Purchase, status: str) -> str:
    """Expired or failed: only an open purchase closes (a paid one never goes back)."""
    if purchase.status != "open":
        return f"left {purchase.status}"
    purchase.status, purchase.closed_at = status, utcnow()
    return status


def purchase_lot(session: Session, purchase: Purchase) -> CreditLot | None:
    if not purchase.grant_transaction_id:
        return None
    return session.scalars(select(CreditLot).where(
        CreditLot.transaction_id == purchase.grant_transaction_id)).first()


def reverse_purchase(session: Session, purchase: Purchase, amount: int, *, kind: str,
                     key: str, reason: str, actor_id: str | None = None) -> tuple[int, int]:
    """Take back `amount` of a purchase's credit; returns (taken, not recoverable)."""
    amount = min(amount, purchase.amount - purchase.reversed_amount)
    lot = purchase_lot(session, purchase)
    if amount <= 0 or lot is None or ledger.find_transaction(session, key) is not None:
        return 0, 0
    _txn, taken = ledger.reverse(session, lot.id, amount, kind=kind, reason=reason,
                                 idempotency_key=key, created_by_id=actor_id)
    # The whole claim counts as reversed even when part of it was already spent: that part
    # is the shortfall the caller reports, not something to take again later.
    purchase.reversed_amount += amount
    return taken, amount - taken


def restore_purchase(session: Session, purchase: Purchase, *, reversal_key: str, claimed: int,
                     key: str, reason: str) -> int:
    """Undo the reversal keyed `reversal_key`: its `claimed` amount no longer counts as
    reversed, and the credit it took goes back to the purchase's lot. Returns what came back."""
    lot = purchase_lot(session, purchase)
    reversal = ledger.find_transaction(session, reversal_key)
    if lot is None or reversal is None or ledger.find_transaction(session, key) is not None:
        return 0
    _txn, given = ledger.restore(session, lot.id, ledger.taken_from_lot(session, reversal, lot.id),
                                 reason=reason, idempotency_key=key)
    if given:  # nothing taken (all of it was spent): the claim keeps counting as reversed
        purchase.reversed_amount -= min(claimed, purchase.reversed_amount)
    return given


def unflag_workspace(session: Session, workspace_id: str, because_of: str) -> None:
    """Clear the flag when it was raised for `because_of` (the start of its reason)."""
    settings = settings_of(session, workspace_id, create=False)
    if settings is not None and (settings.flag_reason or "").startswith(because_of):
        settings.flagged_at, settings.flag_reason = None, None
        log_security(session, "billing_unflagged", workspace_id=workspace_id,
                     reason=because_of[:300])


def flag_workspace(session: Session, workspace_id: str, reason: str) -> None:
    settings = settings_of(session, workspace_id)
    settings.flagged_at, settings.flag_reason = utcnow(), reason[:300]
    log_security(session, "billing_flagged", workspace_id=workspace_id, reason=reason[:300])


def refundable(session: Session, purchase: Purchase) -> int:
    """Unspent purchased credit of this purchase, in whole cents (micro-dollars)."""
    lot = purchase_lot(session, purchase)
    if purchase.status != "granted" or lot is None or not purchase.payment_intent_id:
        return 0
    left = min(lot.remaining, purchase.amount - purchase.reversed_amount)
    return left // 10_000 * 10_000


def refund_unspent(session: Session, config, purchase_id: str, *, actor_id: str,
                   ip: str | None = None) -> int:
    """Refund a purchase's unspent credit through Stripe and post the reversal (operators).

    The workspace stays locked across the Stripe call so nothing spends the credit between
    the check and the reversal; the Stripe idempotency key repeats for a retried click."""
    purchase = session.get(Purchase, purchase_id)
    if purchase is None:
        raise NotFound("No such purchase.", code="purchase_not_found")
    ledger.lock_workspace(session, purchase.workspace_id)
    session.refresh(purchase)
    amount = refundable(session, purchase)
    if amount <= 0:
        raise Conflict("Nothing of this purchase is refundable: its credit is spent, held by "
                       "a batch, or already refunded.", code="nothing_refundable")
    refund = stripe_api.refund(config, payment_intent_id=purchase.payment_intent_id,
                               cents=amount // 10_000, purchase_id=purchase.id,
                               idempotency_key=f"refund:{purchase.id}:{purchase.reversed_amount}")
    reverse_purchase(session, purchase, amount, kind="refund",
                     key=f"refund:{purchase.id}:{refund['id']}", actor_id=actor_id,
                     reason=f"Refund of unspent credit (purchase {purchase.id})")
    log_security(session, "credits_refunded", user_id=actor_id, ip=ip,
                 workspace_id=purchase.workspace_id, purchase_id=purchase.id,
                 amount=money.to_wire(amount), refund_id=refund["id"])
    return amount


def check_low_balance(session: Session, config, workspace_id: str) -> bool:
    """Email the workspace once each time its available credit falls below the threshold;
    returns whether it is below."""
    settings = settings_of(session, workspace_id, create=False)
    threshold = low_balance_threshold(config, settings)
    available = ledger.balances(session, workspace_id).available
    below = available < threshold
    if below and (settings is None or settings.low_balance_notified_at is None):
        settings = settings or settings_of(session, workspace_id)
        settings.low_balance_notified_at = utcnow()
        for to in billing_recipients(session, workspace_id):
            mail.queue_email(session, to, "low_balance",
                             {"available": money.to_display(available),
                              "threshold": money.to_display(threshold),
                              "link": f"{config['BASE_URL'].rstrip('/')}/billing"},
                             idempotency_key=f"low-balance:{workspace_id}:"
                                             f"{settings.low_balance_notified_at.isoformat()}:{to}")
    elif not below and settings is not None and settings.low_balance_notified_at is not None:
        settings.low_balance_notified_at = None  # back above: the next crossing mails again
    return below


def low_balance_threshold(config, settings: WorkspaceBilling | None) -> int:
    if settings is not None and settings.low_balance_threshold is not None:
        return settings.low_balance_threshold
    return config["BATCHROUTER_LOW_BALANCE_THRESHOLD"]


def update_settings(session: Session, workspace_id: str, *, billing_email: str,
                    threshold: str, actor_id: str | None, ip: str | None) -> WorkspaceBilling:
    from batchrouter import accounts

    settings = settings_of(session, workspace_id)
    email = (billing_email or "").strip()
    if email:
        email = accounts.normalize_email(email)
    try:
        micros = money.parse(threshold) if str(threshold).strip() else None
    except money.MoneyFormatError as exc:
        raise ValidationFailed("The warning threshold is a dollar amount like 5.00.",
                               code="invalid_amount") from exc
    settings.billing_email, settings.low_balance_threshold = email or None, micros
    log_security(session, "billing_settings_changed", user_id=actor_id, ip=ip,
                 workspace_id=workspace_id)
    return settings
