"""Webhook delivery pump (on the `webhooks` queue): sends every due delivery, then returns."""
from __future__ import annotations

from batchrouter.webhooks import delivery
from jobs import runtime


def settings() -> delivery.Settings:
    cfg = runtime.config()
    return delivery.Settings(
        allow_private=cfg["WEBHOOKS_ALLOW_PRIVATE_TARGETS"], base_url=cfg["BASE_URL"],
        secret_key=cfg["SECRET_KEY"], artifact_ttl=cfg["BATCHROUTER_ARTIFACT_URL_TTL"],
        threads=cfg["BATCHROUTER_WEBHOOK_THREADS"],
        per_endpoint=cfg["BATCHROUTER_WEBHOOK_ENDPOINT_CONCURRENCY"])


def deliver_due() -> dict:
    stats = delivery.pump(runtime.runtime().db, settings())
    return {"attempts": stats.attempts, "succeeded": stats.succeeded, "failed": stats.failed}


def sweep() -> bool:
    """Periodic (on "default"): wake a pump on "webhooks" when deliveries are due."""
    with runtime.runtime().db.session() as session:
        return delivery.wake_if_due(session)
