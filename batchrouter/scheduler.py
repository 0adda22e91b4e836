"""Recurring jobs that are safe with many workers.

Each worker ticks every few seconds; for a due task, the worker whose conditional UPDATE moves
`next_run_at` forward is the only one that writes the outbox row — in the same transaction —
so a task runs once per interval however many workers tick.
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from batchrouter import queue
from batchrouter.db import utcnow
from batchrouter.models import PeriodicTask

# name -> (job, interval in seconds). Later issues add sweeps, reconciliation and retention.
PERIODIC = {
    "outbox-sweep": ("jobs.maintenance.sweep_outbox", 60),
    "batch-sweep": ("jobs.maintenance.sweep_batches", 30),
    "credit-expiry": ("jobs.maintenance.expire_credit", 3600),
    "retention": ("jobs.privacy.purge_expired", 3600),
    "idempotency-purge": ("jobs.privacy.purge_idempotency", 3600),
    "records-flush": ("jobs.privacy.flush_api_events", 10),
    "billing-reconcile": ("jobs.billing.reconcile", 24 * 3600),
    "low-balance": ("jobs.billing.check_low_balances", 300),
    "provider-health": ("jobs.maintenance.provider_health", 30),
    "hybrid-tail": ("jobs.maintenance.hybrid_tail", 30),
    # Safety net for webhook retries whose wake-up was lost (e.g. a pump died mid-lease).
    "webhook-sweep": ("jobs.webhooks.sweep", 30),
}


def register_defaults(session: Session, tasks: dict | None = None,
                      intervals: dict | None = None) -> None:
    """Create or update the periodic task rows (idempotent; runs when a worker starts).
    `intervals` overrides the seconds of named tasks (from configuration)."""
    for name, (func, interval) in (tasks or PERIODIC).items():
        interval = (intervals or {}).get(name, interval)
        task = session.get(PeriodicTask, name)
        if task is None:
            session.add(PeriodicTask(name=name, func=func, interval_seconds=interval,
                                     next_run_at=utcnow()))
        else:
            task.func, task.interval_seconds = func, interval


def claim_due(session: Session) -> list[str]:
    """Claim every due task this tick and queue its job; returns the names claimed."""
    now = utcnow()
    claimed = []
    due = session.execute(select(PeriodicTask.name, PeriodicTask.func,
                                 PeriodicTask.interval_seconds, PeriodicTask.next_run_at)
                          .where(PeriodicTask.next_run_at <= now)).all()
    for name, func, interval, seen_next in due:
        won = session.execute(
            update(PeriodicTask)
            .where(PeriodicTask.name == name, PeriodicTask.next_run_at == seen_next)
            .values(next_run_at=now + timedelta(seconds=interval), last_run_at=now)).rowcount
        if won == 1:
            queue.add_outbox(session, func)
            claimed.append(name)
    return claimed
