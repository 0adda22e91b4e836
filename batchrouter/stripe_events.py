"""Inbound Stripe events: verified, de-duplicated on the event id, then applied (SPEC §8).

The webhook view hands us the raw body and the Stripe-Signature header; everything runs in
the request's transaction, so an event whose handling fails is not recorded and Stripe's
retry applies it later.
"""
from __future__ import annotations

import stripe
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from batchrouter import billing, money, stripe_api
from batchrouter.errors import DomainError
from batchrouter.models import Purchase, StripeEvent

TOLERANCE = 300  # seconds: Stripe's default; older signatures are replays


class BadSignature(DomainError):
    code, status = "invalid_signature", 400


def verify(payload: bytes, header: str | None, secret: str | None):
    """The event, if Stripe signed this payload with our secret in the last 5 minutes."""
    if not secret:
        raise stripe_api.BillingNotConfigured(
            "STRIPE_WEBHOOK_SECRET is not set; this installation cannot accept Stripe events.")
    if not header:
        raise BadSignature("The Stripe-Signature header is missing.",
                           code="missing_signature")
    try:
        return stripe.Webhook.construct_event(payload, header, secret, tolerance=TOLERANCE)
    except stripe.SignatureVerificationError as exc:
        raise BadSignature("The Stripe-Signature does not verify (wrong secret, altered body "
                           "or a timestamp older than 5 minutes).") from exc
    except ValueError as exc:
        raise BadSignature("The payload is not a Stripe event.", code="invalid_payload") from exc


def record(session: Session, event) -> StripeEvent | None:
    """Claim the event id; None when it was processed before (or is being processed now:
    the insert waits for the other transaction and then conflicts)."""
    row = StripeEvent(id=event["id"], type=event["type"])
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return None
    return row


def handle(session: Session, config, event) -> str:
    """Apply one verified event once; returns what happened (kept on the event row)."""
    row = record(session, event)
    if row is None:
        return "duplicate"
    handler = HANDLERS.get(event["type"])
    obj = stripe_api.plain(event["data"]["object"])
    purchase, outcome = handler(session, config, obj) if handler else (None, "ignored")
    row.purchase_id = purchase.id if purchase is not None else None
    row.outcome = outcome[:300]
    return outcome


def _unclear(checkout) -> bool:
    """Events can be stale or thin: fetch the session when the event does not settle it."""
    return (checkout.get("status") not in ("complete", "expired", "open")
            or checkout.get("payment_status") not in ("paid", "unpaid", "no_payment_required")
            or checkout.get("amount_total") is None
            or (checkout.get("status") == "complete" and checkout.get("payment_status") != "paid"))


def on_session_paid(session, config, checkout):
    """checkout.session.completed / async_payment_succeeded: grant once, only if paid."""
    if _unclear(checkout):
        checkout = stripe_api.retrieve_session(config, checkout["id"])
    return billing.apply_session(session, config, checkout)


def on_session_closed(status: str):
    def handler(session, config, checkout):
        purchase = billing.purchase_for_session(session, config, checkout)
        if purchase is None:
            return None, "not a BatchRouter purchase"
        return purchase, billing.close_purchase(purchase, status)
    return handler


def _purchase_of_intent(session, intent) -> Purchase | None:
    if not intent:
        return None
    intent_id = intent if isinstance(intent, str) else intent.get("id")
    return session.scalars(select(Purchase)
                           .where(Purchase.payment_intent_id == intent_id)).first()


def on_charge_refunded(session, config, charge):
    """A refund made in Stripe (or ours, already reversed): reverse what is not yet."""
    purchase = _purchase_of_intent(session, charge.get("payment_intent"))
    if purchase is None:
        return None, "refund of a charge we do not know"
    claimed = min(int(charge.get("amount_refunded") or 0) * 10_000, purchase.amount)
    due = claimed - purchase.reversed_amount
    if due <= 0:
        return purchase, "already reversed"
    taken, short = billing.reverse_purchase(
        session, purchase, due, kind="reverse",
        key=f"stripe-refund:{purchase.id}:{charge['id']}:{charge.get('amount_refunded')}",
        reason=f"Refund made in Stripe (purchase {purchase.id})")
    _flag(session, purchase, "Refund made in Stripe", taken, short)
    return purchase, f"reversed {money.to_wire(taken)}, unrecovered {money.to_wire(short)}"


def on_dispute(session, config, dispute):
    purchase = _purchase_of_intent(session, dispute.get("payment_intent"))
    if purchase is None:
        return None, "dispute of a charge we do not know"
    taken, short = billing.reverse_purchase(
        session, purchase, int(dispute.get("amount") or 0) * 10_000, kind="reverse",
        key=f"stripe-dispute:{purchase.id}:{dispute['id']}",
        reason=f"Payment disputed (purchase {purchase.id})")
    _flag(session, purchase, "Payment disputed", taken, short)
    return purchase, f"reversed {money.to_wire(taken)}, unrecovered {money.to_wire(short)}"


# A dispute closed with these statuses leaves the payment with us: the credit comes back.
PAYMENT_KEPT = ("won", "warning_closed")


def on_dispute_closed(session, config, dispute):
    """`won` (or an inquiry closed without a chargeback): what the opening took comes back and
    the flag it raised is cleared. `lost`: the reversal stands."""
    purchase = _purchase_of_intent(session, dispute.get("payment_intent"))
    if purchase is None:
        return None, "dispute of a charge we do not know"
    if dispute.get("status") not in PAYMENT_KEPT:
        return purchase, f"dispute closed {dispute.get('status')}: the reversal stands"
    given = billing.restore_purchase(
        session, purchase, reversal_key=f"stripe-dispute:{purchase.id}:{dispute['id']}",
        claimed=int(dispute.get("amount") or 0) * 10_000,
        key=f"stripe-dispute-won:{purchase.id}:{dispute['id']}",
        reason=f"Dispute decided for us: credit restored (purchase {purchase.id})")
    billing.unflag_workspace(session, purchase.workspace_id,
                             f"Payment disputed for purchase {purchase.id}")
    return purchase, f"restored {money.to_wire(given)}"


def _flag(session, purchase: Purchase, what: str, taken: int, short: int) -> None:
    reason = f"{what} for purchase {purchase.id}: {money.to_display(taken)} reversed"
    if short:
        reason += f", {money.to_display(short)} already spent"
    billing.flag_workspace(session, purchase.workspace_id, reason)


HANDLERS = {
    "checkout.session.completed": on_session_paid,
    "checkout.session.async_payment_succeeded": on_session_paid,
    "checkout.session.expired": on_session_closed("expired"),
    "checkout.session.async_payment_failed": on_session_closed("failed"),
    "charge.refunded": on_charge_refunded,
    "charge.dispute.created": on_dispute,
    "charge.dispute.closed": on_dispute_closed,
}
