"""Housekeeping jobs run by the periodic scheduler."""
from __future__ import annotations

from batchrouter import queue
from jobs import runtime


def sweep_outbox() -> int:
    """Enqueue outbox rows whose fast-path enqueue never happened (e.g. a crash after commit)."""
    rt = runtime.runtime()
    return queue.drain_outbox(rt.db, rt.redis, lease=runtime.config()["BATCHROUTER_OUTBOX_LEASE"])


def sweep_batches() -> dict:
    """Recover work a dead worker left, expire late batches, release terminal reservations."""
    from batchrouter import finalize

    with runtime.runtime().db.session() as session:
        return finalize.sweep(session,
                              stale_after=runtime.config()["BATCHROUTER_SWEEP_STALE_AFTER"])


def expire_credit() -> int:
    """Post the expiry of promo/starter lots past their date."""
    from batchrouter import ledger

    with runtime.runtime().db.session() as session:
        return ledger.expire_lots(session)


def provider_health() -> dict:
    """Write the breakers' view of each provider and lane back to the catalog."""
    from batchrouter import provider_status
    from jobs.dispatch import breaker_health

    with runtime.runtime().db.session() as session:
        return provider_status.write_back(session, breaker_health())


def hybrid_tail() -> int:
    """Move the unfinished batch-lane items of hybrid batches past 80 % of their window."""
    from batchrouter import tail

    with runtime.runtime().db.session() as session:
        return tail.move_tail(session)
