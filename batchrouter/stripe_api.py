"""Our only door to Stripe: the official SDK, pointed at STRIPE_API_BASE when it is set.

Everything here is a thin call with an idempotency key where Stripe accepts one; the domain
decisions (what to grant, what to reverse) live in billing.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import stripe

from batchrouter import money
from batchrouter.errors import DomainError

STRIPE_CHECKOUT_ORIGIN = "https://checkout.stripe.com"


class StripeUnavailable(DomainError):
    code, status = "stripe_unavailable", 502


class BillingNotConfigured(DomainError):
    code, status = "billing_not_configured", 503


@dataclass(frozen=True)
class Pack:
    id: str
    usd: str  # "50.00"
    cents: int
    amount: int  # credit in micro-dollars

    @property
    def label(self) -> str:
        return money.to_display(self.amount)


def packs(config) -> list[Pack]:
    """The credit packs on sale (BATCHROUTER_CREDIT_PACKS, USD), smallest first."""
    found = []
    for raw in config["BATCHROUTER_CREDIT_PACKS"]:
        micros = money.parse(str(raw))
        cents = micros // 10_000
        if cents <= 0 or cents * 10_000 != micros:
            raise ValueError(f"credit pack {raw!r} must be a positive amount in whole cents")
        found.append(Pack(id=f"pack_{cents}", usd=f"{cents / 100:.2f}", cents=cents,
                          amount=micros))
    return sorted(found, key=lambda p: p.cents)


def find_pack(config, pack_id: str) -> Pack | None:
    return next((p for p in packs(config) if p.id == pack_id), None)


def is_configured(config) -> bool:
    return bool(config.get("STRIPE_SECRET_KEY"))


def client(config) -> stripe.StripeClient:
    if not is_configured(config):
        raise BillingNotConfigured("Stripe is not configured on this installation: set "
                                   "STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET.")
    base = config.get("STRIPE_API_BASE")
    return stripe.StripeClient(config["STRIPE_SECRET_KEY"],
                               base_addresses={"api": base.rstrip("/")} if base else None,
                               http_client=stripe.RequestsClient(timeout=20),
                               max_network_retries=2)


def checkout_origins(config) -> list[str]:
    """Origins the browser may be sent to for Checkout (the console's CSP form-action)."""
    origins = [STRIPE_CHECKOUT_ORIGIN]
    base = config.get("STRIPE_API_BASE")
    if base:
        parts = urlsplit(base)
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return origins


def plain(obj):
    """SDK objects as plain dicts (they are not dicts since stripe 15)."""
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


def _call(fn, *args, **kwargs):
    try:
        return plain(fn(*args, **kwargs))
    except stripe.StripeError as exc:
        raise StripeUnavailable(f"Stripe refused or did not answer: {exc.user_message or exc}"
                                ) from exc


def create_checkout(config, *, purchase_id: str, workspace_id: str, pack: Pack,
                    success_url: str, cancel_url: str, email: str | None):
    params = {
        "mode": "payment",
        "line_items": [{"quantity": 1, "price_data": {
            "currency": "usd", "unit_amount": pack.cents,
            "product_data": {"name": f"BatchRouter credits ({pack.label})"}}}],
        "client_reference_id": workspace_id,
        "metadata": {"purchase_id": purchase_id, "workspace_id": workspace_id,
                     "pack_id": pack.id},
        "payment_intent_data": {"metadata": {"purchase_id": purchase_id,
                                             "workspace_id": workspace_id}},
        "success_url": success_url, "cancel_url": cancel_url,
    }
    if email:
        params["customer_email"] = email
    return _call(client(config).v1.checkout.sessions.create, params,
                 {"idempotency_key": f"checkout:{purchase_id}"})


def retrieve_session(config, session_id: str):
    return _call(client(config).v1.checkout.sessions.retrieve, session_id)


def recent_sessions(config, since: int):
    """Every Checkout Session created since the Unix time `since` (all pages)."""
    try:
        listing = client(config).v1.checkout.sessions.list({"created": {"gte": since},
                                                             "limit": 100})
        return [plain(s) for s in listing.auto_paging_iter()]
    except stripe.StripeError as exc:
        raise StripeUnavailable(f"Stripe refused or did not answer: {exc}") from exc


def receipt_url(config, payment_intent_id: str) -> tuple[str | None, str | None]:
    """(charge id, receipt URL) of a paid PaymentIntent."""
    intent = _call(client(config).v1.payment_intents.retrieve, payment_intent_id,
                   {"expand": ["latest_charge"]})
    charge = intent.get("latest_charge")
    if isinstance(charge, str) or charge is None:
        return charge, None
    return charge.get("id"), charge.get("receipt_url")


def refund(config, *, payment_intent_id: str, cents: int, idempotency_key: str,
           purchase_id: str):
    return _call(client(config).v1.refunds.create,
                 {"payment_intent": payment_intent_id, "amount": cents,
                  "reason": "requested_by_customer", "metadata": {"purchase_id": purchase_id}},
                 {"idempotency_key": idempotency_key})
