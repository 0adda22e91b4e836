"""Opt-in email when a batch finishes, to every member of its workspace who asked for it."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from batchrouter import email as mail
from batchrouter import money
from batchrouter.models import Batch, Membership, User
from batchrouter.models.batches import BATCH_TERMINAL


def batch_finished(session: Session, batch_id: str, status: str | None, base_url: str) -> int:
    """Queue one email per opted-in member (in the finalize transaction); returns how many."""
    if status not in BATCH_TERMINAL:
        return 0
    batch = session.get(Batch, batch_id)
    members = session.scalars(select(User.email).join(Membership, Membership.user_id == User.id)
                              .where(Membership.workspace_id == batch.workspace_id,
                                     User.notify_batch_finished.is_(True))).all()
    context = {"batch_id": batch.id, "status": status, "total": batch.total,
               "succeeded": batch.succeeded, "failed": batch.failed,
               "cancelled": batch.cancelled, "expired": batch.expired,
               "cost": money.to_wire(batch.settled_micros),
               "batch_url": f"{base_url.rstrip('/')}/batches/{batch.id}"}
    for address in members:
        mail.queue_email(session, address, "batch_finished", context,
                         idempotency_key=f"batch-finished:{batch.id}:{address}")
    return len(members)


def set_batch_finished(session: Session, user_id: str, enabled: bool) -> None:
    session.get(User, user_id).notify_batch_finished = enabled
