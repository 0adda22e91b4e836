"""The delivery log: deliveries with their attempts, filtered and cursor-paged (SPEC §7)."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from batchrouter.db import iso
from batchrouter.errors import InvalidRequest
from batchrouter.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from batchrouter.webhooks.events import TEST_TYPE, TYPES

STATUSES = ("pending", "succeeded", "failed")


def list_deliveries(session: Session, workspace_id: str, *, endpoint_id: str | None = None,
                    status: str | None = None, event_type: str | None = None,
                    batch_id: str | None = None, after: str | None = None,
                    limit: int = 20) -> list[WebhookDelivery]:
    """Newest first; `after` is the last id of the previous page."""
    if status and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}.",
                             code="invalid_status")
    if event_type and event_type not in (*TYPES, TEST_TYPE):
        raise InvalidRequest("Unknown event_type.", code="invalid_event_type")
    stmt = select(WebhookDelivery).where(WebhookDelivery.workspace_id == workspace_id)
    for column, value in ((WebhookDelivery.endpoint_id, endpoint_id),
                          (WebhookDelivery.status, status),
                          (WebhookDelivery.event_type, event_type),
                          (WebhookDelivery.batch_id, batch_id)):
        if value:
            stmt = stmt.where(column == value)
    if after:
        stmt = stmt.where(WebhookDelivery.id < after)
    return list(session.scalars(stmt.order_by(WebhookDelivery.id.desc()).limit(limit)))


def attempts_of(session: Session, delivery_ids: list[str]) -> dict[str, list[WebhookAttempt]]:
    out: dict[str, list] = {d: [] for d in delivery_ids}
    if delivery_ids:
        for attempt in session.scalars(select(WebhookAttempt).where(
                WebhookAttempt.delivery_id.in_(delivery_ids)).order_by(WebhookAttempt.number)):
            out[attempt.delivery_id].append(attempt)
    return out


def attempt_json(a: WebhookAttempt) -> dict:
    return {"number": a.number, "attempted_at": iso(a.started_at),
            "webhook_timestamp": a.signed_timestamp, "status_code": a.status_code,
            "latency_ms": a.latency_ms, "response_excerpt": a.response_excerpt,
            "error": a.error, "succeeded": a.succeeded}


def delivery_json(d: WebhookDelivery, attempts: list[WebhookAttempt],
                  endpoint: WebhookEndpoint | None = None) -> dict:
    return {"object": "webhook_delivery", "id": d.id, "event_id": d.event_id,
            "event_type": d.event_type, "endpoint_id": d.endpoint_id,
            "url": endpoint.url if endpoint else None, "batch_id": d.batch_id,
            "status": d.status, "attempt_count": d.attempts,
            "next_attempt_at": iso(d.next_attempt_at), "last_status_code": d.last_status_code,
            "last_error": d.last_error, "redelivery_of": d.redelivery_of,
            "created_at": iso(d.created_at), "finished_at": iso(d.finished_at),
            "attempts": [attempt_json(a) for a in attempts]}


def page_json(session: Session, rows: list[WebhookDelivery], limit: int) -> dict:
    page = rows[:limit]
    attempts = attempts_of(session, [d.id for d in page])
    urls = {e.id: e for e in session.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.id.in_({d.endpoint_id for d in page})))} if page else {}
    return {"object": "list",
            "data": [delivery_json(d, attempts[d.id], urls.get(d.endpoint_id)) for d in page],
            "has_more": len(rows) > limit, "last_id": page[-1].id if page else None}
