"""Billing API (SPEC §6) under the `billing` scope, and the inbound Stripe webhook."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from batchrouter import billing, ledger, money, statements, stripe_api, stripe_events
from batchrouter.api.auth import current_principal, require
from batchrouter.api.idempotent import idempotent
from batchrouter.api.v1 import json_body
from batchrouter.db import iso
from batchrouter.errors import InvalidRequest, NotFound
from batchrouter.extensions import client_ip, db_session
from batchrouter.models import Purchase
from batchrouter.records import log_security

bp = Blueprint("billing_api", __name__)


def purchase_json(purchase: Purchase) -> dict:
    return {"object": "purchase", "id": purchase.id, "status": purchase.status,
            "pack": purchase.pack_id, "amount": money.to_wire(purchase.amount),
            "price": {"amount": purchase.price_cents, "currency": "usd"},
            "checkout_url": purchase.checkout_url if purchase.status == "open" else None,
            "receipt_url": purchase.receipt_url,
            "reversed_amount": money.to_wire(purchase.reversed_amount),
            "created_at": iso(purchase.created_at), "granted_at": iso(purchase.granted_at)}


@bp.get("/v1/billing/balance")
@require("billing")
def balance():
    """Available, reserved, spent (total and this month) and the low-balance threshold."""
    session = db_session()
    workspace_id = current_principal().workspace_id
    b = ledger.balances(session, workspace_id)
    threshold = billing.low_balance_threshold(
        current_app.config, billing.settings_of(session, workspace_id, create=False))
    return jsonify({"object": "balance", "currency": "usd",
                    "available": money.to_wire(b.available),
                    "reserved": money.to_wire(b.reserved), "spent": money.to_wire(b.spent),
                    "spent_this_month": money.to_wire(
                        statements.spent_this_month(session, workspace_id)),
                    "low_balance_threshold": money.to_wire(threshold),
                    "low_balance": b.available < threshold})


@bp.get("/v1/billing/ledger")
@require("billing")
def ledger_list():
    """Ledger transactions, newest first, cursor paged; filters kind, batch_id, since, until."""
    try:
        limit = min(max(int(request.args.get("limit", 50)), 1), 500)
    except ValueError as exc:
        raise InvalidRequest("limit is a number from 1 to 500.", code="invalid_limit") from exc
    data, cursor = statements.page(db_session(), current_principal().workspace_id,
                                   statements.parse_filters(request.args),
                                   cursor=request.args.get("cursor") or None, limit=limit)
    return jsonify({"object": "list", "data": data, "next_cursor": cursor})


@bp.get("/v1/billing/packs")
@require("billing")
def packs():
    """The credit packs on sale."""
    return jsonify({"object": "list", "data": [
        {"object": "credit_pack", "id": p.id, "amount": money.to_wire(p.amount),
         "price": {"amount": p.cents, "currency": "usd"}}
        for p in stripe_api.packs(current_app.config)]})


@bp.post("/v1/billing/checkout")
@require("billing")
@idempotent()
def checkout():
    """A Stripe Checkout URL for a pack; credits arrive when Stripe confirms the payment."""
    principal = current_principal()
    session = db_session()
    purchase = billing.start_checkout(session, current_app.config,
                                      workspace_id=principal.workspace_id,
                                      pack_id=str(json_body().get("pack") or ""),
                                      user_id=principal.user_id)
    session.commit()
    return jsonify(purchase_json(purchase) | {"url": purchase.checkout_url}), 201


@bp.get("/v1/billing/purchases/<purchase_id>")
@require("billing")
def purchase(purchase_id: str):
    """Poll a purchase (open → granted, or expired / failed)."""
    found = db_session().get(Purchase, purchase_id)
    if found is None or found.workspace_id != current_principal().workspace_id:
        raise NotFound("No such purchase in this workspace.", code="purchase_not_found")
    return jsonify(purchase_json(found))


@bp.post("/webhooks/stripe")
def stripe_webhook():
    """Stripe's events: signature-verified (not CSRF), each applied once."""
    session = db_session()
    payload = request.get_data()
    try:
        event = stripe_events.verify(payload, request.headers.get("Stripe-Signature"),
                                     current_app.config.get("STRIPE_WEBHOOK_SECRET"))
    except stripe_events.BadSignature as exc:
        log_security(session, "stripe_webhook_rejected", ip=client_ip(), reason=exc.code,
                     user_agent=request.headers.get("User-Agent"))
        session.commit()
        raise
    outcome = stripe_events.handle(session, current_app.config, event)
    session.commit()
    return jsonify({"received": True, "outcome": outcome})


def openapi_paths(resp, errors, error_schema) -> dict:
    """The billing part of /openapi.json (merged by api/openapi.py)."""
    obj = {"type": "object"}
    q = [{"name": n, "in": "query", "schema": {"type": "string"}}
         for n in ("cursor", "kind", "batch_id", "since", "until")]
    return {
        "/v1/billing/balance": {"get": {
            "summary": "Available, reserved, spent (and this month), low-balance threshold",
            "operationId": "billingBalance",
            "responses": {"200": resp("Balance", obj), **errors(401, 403, 429)}}},
        "/v1/billing/ledger": {"get": {
            "summary": "Ledger transactions, newest first, cursor paged",
            "operationId": "billingLedger",
            "parameters": q + [{"name": "limit", "in": "query", "schema": {"type": "integer"}}],
            "responses": {"200": resp("Transactions", obj), **errors(400, 401, 403, 429)}}},
        "/v1/billing/packs": {"get": {
            "summary": "Credit packs on sale", "operationId": "billingPacks",
            "responses": {"200": resp("Packs", obj), **errors(401, 403, 429)}}},
        "/v1/billing/checkout": {"post": {
            "summary": "A Stripe Checkout URL for a credit pack (credits arrive on payment)",
            "operationId": "billingCheckout",
            "parameters": [{"name": "Idempotency-Key", "in": "header",
                            "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["pack"],
                "properties": {"pack": {"type": "string", "example": "pack_5000"}}}}}},
            "responses": {"201": resp("Purchase with its checkout url", obj),
                          "502": resp("stripe_unavailable", error_schema),
                          "503": resp("billing_not_configured", error_schema),
                          **errors(400, 401, 403, 409, 422, 429)}}},
        "/v1/billing/purchases/{id}": {"get": {
            "summary": "Poll a purchase (open, granted, expired, failed)",
            "operationId": "billingPurchase",
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": resp("Purchase", obj), **errors(401, 403, 404, 429)}}},
    }
