"""Privacy and retention jobs: export archives and the scheduled purge."""
from __future__ import annotations

from jobs import runtime


def privacy_settings(cfg):
    from batchrouter import privacy

    return privacy.Settings(secret=cfg["SECRET_KEY"], base_url=cfg["BASE_URL"].rstrip("/"),
                            operator_name=cfg["OPERATOR_NAME"],
                            confirm_ttl=cfg["BATCHROUTER_PRIVACY_CONFIRM_TTL"],
                            export_ttl=cfg["BATCHROUTER_EXPORT_URL_TTL"],
                            policy_version=cfg["BATCHROUTER_POLICY_VERSION"])


def build_export(request_id: str) -> None:
    """Build and send the archive of an access/export request (idempotent)."""
    from batchrouter import privacy_actions

    rt, cfg = runtime.runtime(), runtime.config()
    with rt.db.session() as session:
        privacy_actions.build_export(session, privacy_settings(cfg), rt.storage, request_id,
                                     contact=cfg["OPERATOR_EMAIL"])


def purge_expired() -> dict:
    """Remove data past its retention period and record what went."""
    from batchrouter import retention

    rt, cfg = runtime.runtime(), runtime.config()
    with rt.db.session() as session:
        run = retention.purge(session, retention.policy_from(cfg), rt.storage)
        return dict(run.removed)


def flush_api_events() -> int:
    """Move buffered API events and rate-limit hits from Redis into the database."""
    from batchrouter import apievents

    rt = runtime.runtime()
    with rt.db.session() as session:
        return apievents.flush(session, rt.redis)


def purge_idempotency() -> int:
    """Drop Idempotency-Key records older than BATCHROUTER_IDEMPOTENCY_TTL."""
    from datetime import timedelta

    from batchrouter import idempotency
    from batchrouter.db import utcnow

    with runtime.runtime().db.session() as session:
        cutoff = utcnow() - timedelta(seconds=runtime.config()["BATCHROUTER_IDEMPOTENCY_TTL"])
        return idempotency.purge_older_than(session, cutoff)
