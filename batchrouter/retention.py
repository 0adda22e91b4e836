"""Retention (SPEC §10): a period per data class, and the purge that removes what expired
and records what it removed (one `RetentionRun` per pass)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from batchrouter.db import utcnow
from batchrouter.models import (
    AnalyticsEvent,
    AnalyticsPageView,
    ApiEvent,
    Batch,
    EmailMessage,
    File,
    Item,
    RateLimitHit,
    RetentionRun,
    SecurityEvent,
    SupportMessage,
)
from batchrouter.models.batches import BATCH_TERMINAL


@dataclass(frozen=True)
class Policy:
    """Days each class is kept (0 = forever)."""

    item_data: int
    artifacts: int
    api_events: int
    security_log: int
    analytics: int
    emails: int
    support: int


LABELS = {
    "item_data": ("Manifests and item inputs and outputs", "after the batch finishes"),
    "artifacts": ("Result and error files", "after they are created"),
    "api_events": ("API request records and rate-limit hits", ""),
    "security_log": ("Security log (sign-ins, keys, roles, privacy actions)", ""),
    "analytics": ("Analytics counts (only with consent)", ""),
    "emails": ("Copies of emails we sent you", ""),
    "support": ("Support messages", ""),
}
KEYS = {"item_data": "ITEM_DATA", "artifacts": "ARTIFACT", "api_events": "API_EVENT",
        "security_log": "SECURITY_LOG", "analytics": "ANALYTICS", "emails": "EMAIL",
        "support": "SUPPORT"}


def policy_from(cfg) -> Policy:
    return Policy(**{name: int(cfg[f"BATCHROUTER_RETENTION_{key}_DAYS"])
                     for name, key in KEYS.items()})


def describe(policy: Policy) -> list[tuple[str, str]]:
    """(data class, how long) rows for the privacy policy and the operator page."""
    rows = []
    for name, days in asdict(policy).items():
        label, when = LABELS[name]
        rows.append((label, "kept until deleted" if not days else
                     f"{days} days{' ' + when if when else ''}"))
    rows.append(("Payment and ledger records", "as long as accounting and tax law require"))
    return rows


def _cutoff(now: datetime, days: int) -> datetime | None:
    return now - timedelta(days=days) if days else None


def _purge_item_data(session: Session, cutoff: datetime, storage) -> int:
    finished = select(Batch.id).where(Batch.status.in_(BATCH_TERMINAL), Batch.finished_at < cutoff)
    count = session.execute(update(Item).where(Item.batch_id.in_(finished),
                                               or_(Item.line != b"", Item.result.is_not(None)))
                            .values(line=b"", result=None)
                            .execution_options(synchronize_session=False)).rowcount or 0
    active_inputs = select(Batch.input_file_id).where(Batch.status.not_in(BATCH_TERMINAL),
                                                      Batch.input_file_id.is_not(None))
    manifests = session.scalars(select(File).where(File.purpose == "batch",
                                                   File.deleted_at.is_(None),
                                                   File.created_at < cutoff,
                                                   File.id.not_in(active_inputs))).all()
    return count + _delete_files(manifests, storage)


def _delete_files(files, storage) -> int:
    now = utcnow()
    for record in files:
        storage.delete(record.storage_key)
        record.deleted_at = now
    return len(files)


def _purge_artifacts(session: Session, cutoff: datetime, storage) -> int:
    files = session.scalars(select(File).where(File.purpose.in_(("batch_output", "batch_errors")),
                                               File.deleted_at.is_(None),
                                               File.created_at < cutoff)).all()
    return _delete_files(files, storage)


def _delete_older(session: Session, model, column, cutoff) -> int:
    return session.execute(delete(model).where(column < cutoff)
                           .execution_options(synchronize_session=False)).rowcount or 0


def purge(session: Session, policy: Policy, storage, now: datetime | None = None) -> RetentionRun:
    """Remove everything past its period; the caller commits (one transaction)."""
    now = now or utcnow()
    run = RetentionRun(started_at=now, policy=asdict(policy), removed={})
    removed: dict[str, int] = {}
    if cutoff := _cutoff(now, policy.item_data):
        removed["item_data"] = _purge_item_data(session, cutoff, storage)
    if cutoff := _cutoff(now, policy.artifacts):
        removed["artifacts"] = _purge_artifacts(session, cutoff, storage)
    if cutoff := _cutoff(now, policy.api_events):
        removed["api_events"] = (_delete_older(session, ApiEvent, ApiEvent.created_at, cutoff)
                                 + _delete_older(session, RateLimitHit, RateLimitHit.created_at,
                                                 cutoff))
    if cutoff := _cutoff(now, policy.security_log):
        removed["security_log"] = _delete_older(session, SecurityEvent,
                                                SecurityEvent.created_at, cutoff)
    if cutoff := _cutoff(now, policy.analytics):
        removed["analytics"] = (_delete_older(session, AnalyticsPageView, AnalyticsPageView.day,
                                              cutoff.date())
                                + _delete_older(session, AnalyticsEvent, AnalyticsEvent.day,
                                                cutoff.date()))
    if cutoff := _cutoff(now, policy.emails):
        removed["emails"] = session.execute(
            delete(EmailMessage).where(EmailMessage.created_at < cutoff,
                                       EmailMessage.status != "queued")
            .execution_options(synchronize_session=False)).rowcount or 0
    if cutoff := _cutoff(now, policy.support):
        removed["support"] = _delete_older(session, SupportMessage, SupportMessage.created_at,
                                           cutoff)
    run.removed, run.finished_at = removed, utcnow()
    session.add(run)
    return run


def last_run(session: Session) -> RetentionRun | None:
    return session.scalars(select(RetentionRun).order_by(RetentionRun.id.desc()).limit(1)).first()


def recent_runs(session: Session, limit: int = 10) -> list[RetentionRun]:
    return list(session.scalars(select(RetentionRun).order_by(RetentionRun.id.desc()).limit(limit)))
