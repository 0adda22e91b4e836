"""A loopback stand-in for the Stripe API (form-encoded requests, Stripe's JSON objects) and a
hosted-checkout page, built on tests/stubs.StubServer; events are signed with the `stripe`
library's own signature helper."""
from __future__ import annotations

import itertools
import json
import time
import uuid
from urllib.parse import parse_qs, parse_qsl

import stripe

from tests.stubs import StubServer

WEBHOOK_SECRET = "whsec_test_secret"
_seq = itertools.count(1)


def unflatten(pairs) -> dict:
    """Stripe's form encoding (a[b][0][c]=v) back into nested dicts/lists."""
    out: dict = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return out


class StripeStub:
    def __init__(self):
        self.server = StubServer()
        self.sessions: dict[str, dict] = {}
        self.by_key: dict[str, dict] = {}
        self.refunds: list[dict] = []
        self.charges: dict[str, dict] = {}
        self.down = False
        s = self.server
        s.route("POST", "/v1/checkout/sessions", self._create)
        s.route("GET", "/v1/checkout/sessions", self._list)
        s.route("POST", "/v1/refunds", self._refund)

    def start(self) -> StripeStub:
        self.server.start()
        self.url = self.server.url
        return self

    def stop(self):
        self.server.stop()

    # --- API ------------------------------------------------------------------------------

    def _create(self, req):
        if self.down:
            return 500, {"error": {"type": "api_error", "message": "stub is down"}}
        key = req.headers.get("idempotency-key")
        if key in self.by_key:
            return 200, self.by_key[key]
        params = unflatten(parse_qsl(req.body.decode()))
        item = params["line_items"]["0"]
        cents = int(item["price_data"]["unit_amount"]) * int(item.get("quantity", 1))
        sid = f"cs_test_{uuid.uuid4().hex[:20]}"
        obj = {"id": sid, "object": "checkout.session", "mode": params["mode"],
               "status": "open", "payment_status": "unpaid", "amount_total": cents,
               "amount_subtotal": cents, "currency": item["price_data"]["currency"],
               "client_reference_id": params.get("client_reference_id"),
               "customer_email": params.get("customer_email"),
               "metadata": params.get("metadata", {}), "payment_intent": None,
               "success_url": params["success_url"], "cancel_url": params["cancel_url"],
               "url": f"{self.url}/pay/{sid}", "created": int(time.time()), "_order": next(_seq),
               "livemode": False}
        self.sessions[sid] = obj
        self.by_key[key] = self.public(sid)
        self.server.route("GET", f"/v1/checkout/sessions/{sid}", lambda r, sid=sid:
                          (200, self.public(sid)))
        self.server.route("GET", f"/pay/{sid}", lambda r, sid=sid: self._page(sid))
        self.server.route("GET", f"/pay/{sid}/complete", lambda r, sid=sid: self._complete(sid))
        return 200, self.public(sid)

    def public(self, sid: str) -> dict:
        return {k: v for k, v in self.sessions[sid].items() if k != "_order"}

    def _list(self, req):
        q = parse_qs(req.query)
        limit = int(q.get("limit", ["10"])[0])
        ordered = sorted(self.sessions.values(), key=lambda o: -o["_order"])
        after = q.get("starting_after", [None])[0]
        if after:
            index = [o["id"] for o in ordered].index(after)
            ordered = ordered[index + 1:]
        page = ordered[:limit]
        return 200, {"object": "list", "url": "/v1/checkout/sessions",
                     "data": [self.public(o["id"]) for o in page],
                     "has_more": len(ordered) > limit}

    def _refund(self, req):
        key = req.headers.get("idempotency-key")
        for r in self.refunds:
            if r["_key"] == key:
                return 200, {k: v for k, v in r.items() if k != "_key"}
        params = unflatten(parse_qsl(req.body.decode()))
        charge = next(c for c in self.charges.values()
                      if c["payment_intent"] == params["payment_intent"])
        amount = int(params["amount"])
        charge["amount_refunded"] += amount
        refund = {"id": f"re_{uuid.uuid4().hex[:16]}", "object": "refund", "amount": amount,
                  "payment_intent": params["payment_intent"], "charge": charge["id"],
                  "status": "succeeded", "metadata": params.get("metadata", {}), "_key": key}
        self.refunds.append(refund)
        return 200, {k: v for k, v in refund.items() if k != "_key"}

    # --- The hosted checkout page ---------------------------------------------------------

    def _page(self, sid):
        obj = self.sessions[sid]
        html = (f"<!doctype html><title>Stub Checkout</title><h1>Pay ${obj['amount_total'] / 100:.2f}"
                f"</h1><p>Session {sid}</p><a id='pay' href='/pay/{sid}/complete'>Pay</a>")
        return 200, html.encode(), {"Content-Type": "text/html; charset=utf-8"}

    def _complete(self, sid):
        self.pay(sid)
        target = self.sessions[sid]["success_url"].replace("{CHECKOUT_SESSION_ID}", sid)
        return 303, b"", {"Location": target, "Content-Type": "text/plain"}

    # --- Test controls --------------------------------------------------------------------

    def pay(self, sid: str) -> dict:
        obj = self.sessions[sid]
        if obj["payment_status"] != "paid":
            pi = f"pi_{uuid.uuid4().hex[:16]}"
            charge = {"id": f"ch_{uuid.uuid4().hex[:16]}", "object": "charge",
                      "payment_intent": pi, "amount": obj["amount_total"],
                      "amount_refunded": 0, "receipt_url": f"{self.url}/receipts/{pi}"}
            self.charges[charge["id"]] = charge
            obj.update(status="complete", payment_status="paid", payment_intent=pi)
            self.server.route("GET", f"/v1/payment_intents/{pi}", lambda r, c=charge: (
                200, {"id": c["payment_intent"], "object": "payment_intent",
                      "latest_charge": dict(c)}))
        return self.public(sid)

    def expire(self, sid: str) -> dict:
        self.sessions[sid].update(status="expired")
        return self.public(sid)

    def charge_of(self, sid: str) -> dict:
        pi = self.sessions[sid]["payment_intent"]
        return next(c for c in self.charges.values() if c["payment_intent"] == pi)


def event(type_: str, obj: dict, event_id: str | None = None) -> dict:
    return {"id": event_id or f"evt_{uuid.uuid4().hex[:20]}", "object": "event",
            "type": type_, "api_version": "2024-06-20", "created": int(time.time()),
            "livemode": False, "data": {"object": obj}}


def signed(evt: dict, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
           ) -> tuple[bytes, dict]:
    """Body and headers as Stripe sends them (Stripe-Signature: t=…,v1=HMAC-SHA256)."""
    payload = json.dumps(evt)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret,
                                                               timestamp=timestamp)
    return payload.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}
