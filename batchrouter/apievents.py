"""API events and rate-limit hits (SPEC §10 records). A request only pushes a small JSON line
to Redis; a periodic job (and the operator page) moves them into the database in bulk, so
the API hot path never waits on a database write."""
from __future__ import annotations

import json
import logging
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from batchrouter.models import ApiEvent, RateLimitHit

BUFFER_KEY = "br:records:buffer"
BATCH = 2000
log = logging.getLogger(__name__)


def buffer(redis, record: dict) -> None:
    """Queue one record (kind `api` or `rate_limit`); a Redis hiccup never fails the request."""
    try:
        redis.rpush(BUFFER_KEY, json.dumps(record, separators=(",", ":")))
    except Exception:
        log.warning("could not buffer an API event", exc_info=True)


def _parse(raw: bytes) -> dict | None:
    try:
        record = json.loads(raw)
        record["created_at"] = datetime.fromisoformat(record["created_at"])
        return record
    except (ValueError, KeyError, TypeError):
        return None


def flush(session: Session, redis, limit: int = 50_000) -> int:
    """Insert buffered records (LPOP is atomic: two flushers never insert one twice)."""
    moved = 0
    while moved < limit:
        raws = redis.lpop(BUFFER_KEY, BATCH) or []
        if not raws:
            break
        records = [r for r in map(_parse, raws) if r]
        api = [{k: r.get(k) for k in ("method", "path", "status", "latency_ms", "key_id",
                                      "workspace_id", "request_id", "created_at")}
               for r in records if r.get("kind") == "api"]
        hits = [{k: r.get(k) for k in ("method", "path", "ip", "key_id", "workspace_id",
                                       "created_at")}
                for r in records if r.get("kind") == "rate_limit"]
        if api:
            session.execute(insert(ApiEvent), api)
        if hits:
            session.execute(insert(RateLimitHit), hits)
        moved += len(raws)
    return moved


def search_events(session: Session, *, workspace_id=None, key_id=None, status=None,
                  path=None, limit: int = 200) -> list[ApiEvent]:
    stmt = select(ApiEvent)
    if workspace_id:
        stmt = stmt.where(ApiEvent.workspace_id == workspace_id)
    if key_id:
        stmt = stmt.where(ApiEvent.key_id == key_id)
    if status:
        stmt = stmt.where(ApiEvent.status == status)
    if path:
        stmt = stmt.where(ApiEvent.path.startswith(path))
    return list(session.scalars(stmt.order_by(ApiEvent.id.desc()).limit(limit)))


def recent_rate_limit_hits(session: Session, limit: int = 100) -> list[RateLimitHit]:
    return list(session.scalars(select(RateLimitHit).order_by(RateLimitHit.id.desc())
                                .limit(limit)))
