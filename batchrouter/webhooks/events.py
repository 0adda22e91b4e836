"""Webhook events: written with the state change that causes them, one delivery per endpoint.

`batch_event` is the one call each state change makes; it writes the event, its deliveries and
the outbox row that wakes a delivery pump, all in the caller's transaction — so an event exists
if and only if the change commits.
"""
from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from batchrouter import money, queue
from batchrouter.db import utcnow
from batchrouter.errors import NotFound
from batchrouter.models import Batch, Quote, WebhookDelivery, WebhookEndpoint, WebhookEvent
from batchrouter.webhooks import endpoints

PUMP_JOB = "jobs.webhooks.deliver_due"
QUEUE = "webhooks"
PROGRESS_EVERY = 30  # seconds: batch.progress is sent at most this often per batch
TERMINAL_TYPES = ("batch.completed", "batch.failed", "batch.cancelled", "batch.expired")
TYPES = ("batch.quoted", "batch.submitted", "batch.progress", *TERMINAL_TYPES)
TEST_TYPE = "webhook.test"


def on_batch_created(session: Session, batch: Batch) -> None:
    """The batch's own endpoint (if it brought one) and its `batch.submitted` event."""
    endpoints.attach_to_batch(session, batch)
    batch_event(session, batch, "batch.submitted")


def batch_event(session: Session, batch: Batch, event_type: str) -> WebhookEvent | None:
    """Record `event_type` for the batch if anyone listens (progress at most every 30 s)."""
    targets = endpoints.targets_for(session, batch, batch.workspace_id)
    if not targets:
        return None
    if event_type == "batch.progress":
        if _progress_sent_recently(session, batch.id):
            return None
        session.flush()
        session.refresh(batch)  # counters move through UPDATE statements, not the object
    return _record(session, batch.workspace_id, batch.id, event_type, batch_data(batch), targets)


def quote_event(session: Session, quote: Quote) -> WebhookEvent | None:
    """`batch.quoted` goes to the workspace default (a quote has no batch endpoint yet)."""
    targets = endpoints.targets_for(session, None, quote.workspace_id)
    if not targets:
        return None
    data = {"batch_id": None, "quote_id": quote.id, "status": "quoted",
            "counts": {"total": quote.item_count},
            "cost_usd": {"quoted_low": money.to_wire(quote.low_micros),
                         "quoted_expected": money.to_wire(quote.expected_micros),
                         "quoted_high": money.to_wire(quote.high_micros)},
            "expires_at": int(quote.expires_at.timestamp())}
    return _record(session, quote.workspace_id, None, "batch.quoted", data, targets)


def test_event(session: Session, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A `webhook.test` event to one endpoint (from the console or the API)."""
    endpoints.require_active(endpoint)
    event = _record(session, endpoint.workspace_id, endpoint.batch_id, TEST_TYPE,
                    {"batch_id": endpoint.batch_id, "message": "Test event from BatchRouter."},
                    [endpoint])
    return session.scalars(select(WebhookDelivery)
                           .where(WebhookDelivery.event_id == event.id)).one()


def batch_data(batch: Batch) -> dict:
    return {"batch_id": batch.id, "status": batch.status,
            "counts": {"total": batch.total, "succeeded": batch.succeeded,
                       "failed": batch.failed, "cancelled": batch.cancelled,
                       "expired": batch.expired, "running": batch.running,
                       "pending": batch.pending},
            "cost_usd": {"quoted_expected": money.to_wire(batch.quoted_expected_micros),
                         "quoted_high": money.to_wire(batch.quoted_high_micros),
                         "settled": money.to_wire(batch.settled_micros)}}


def _progress_sent_recently(session: Session, batch_id: str) -> bool:
    since = utcnow() - timedelta(seconds=PROGRESS_EVERY)
    return session.scalar(select(WebhookEvent.id).where(
        WebhookEvent.batch_id == batch_id, WebhookEvent.type == "batch.progress",
        WebhookEvent.created_at > since).limit(1)) is not None


def _record(session: Session, workspace_id: str, batch_id: str | None, event_type: str,
            data: dict, targets: list) -> WebhookEvent:
    now = utcnow()
    event = WebhookEvent(workspace_id=workspace_id, batch_id=batch_id, type=event_type,
                         created_at=now, body="")
    session.add(event)
    session.flush()
    event.body = json.dumps({"id": event.id, "type": event_type,
                             "created": int(now.timestamp()), "data": data},
                            separators=(",", ":"))
    for endpoint in targets:
        session.add(WebhookDelivery(workspace_id=workspace_id, event_id=event.id,
                                    endpoint_id=endpoint.id, event_type=event_type,
                                    batch_id=batch_id, next_attempt_at=now, created_at=now))
    session.flush()
    queue.add_outbox(session, PUMP_JOB, queue=QUEUE)
    return event


def redeliver(session: Session, workspace_id: str, delivery_id: str) -> WebhookDelivery:
    """Send the same event (same `webhook-id`) to the same endpoint again, as a new delivery."""
    original = get_delivery(session, workspace_id, delivery_id)
    endpoint = session.get(WebhookEndpoint, original.endpoint_id)
    endpoints.require_active(endpoint)
    now = utcnow()
    again = WebhookDelivery(workspace_id=workspace_id, event_id=original.event_id,
                            endpoint_id=endpoint.id, event_type=original.event_type,
                            batch_id=original.batch_id, next_attempt_at=now, created_at=now,
                            redelivery_of=original.id)
    session.add(again)
    session.flush()
    queue.add_outbox(session, PUMP_JOB, queue=QUEUE)
    return again


def get_delivery(session: Session, workspace_id: str, delivery_id: str) -> WebhookDelivery:
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.workspace_id != workspace_id:
        raise NotFound("No such webhook delivery.", code="webhook_delivery_not_found")
    return delivery
