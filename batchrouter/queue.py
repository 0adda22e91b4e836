"""The one place that talks to RQ: enqueue by dotted name, the outbox drainer, heartbeats.

Work that must survive a crash goes through `add_outbox` in the same transaction as the state
change; `drain_outbox` moves committed rows to Redis. It runs right after each commit (fast
path) and on every scheduler tick in every worker (the safety net), and a lease keeps two
drainers from enqueuing the same row at once.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from datetime import timedelta

from redis import Redis
from rq import Queue, Retry
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from batchrouter.db import Database, claim_leases, utcnow
from batchrouter.models import OutboxMessage

log = logging.getLogger(__name__)

# Retry policy per job: (attempts after the first, seconds between them).
RETRIES = {
    "jobs.email.send_email": (6, [10, 60, 300, 900, 3600, 7200]),
}
DEFAULT_TIMEOUT = 600
HEARTBEAT_KEY = "batchrouter:worker-heartbeat:"

_connections: dict[str, Redis] = {}


def connect(url: str) -> Redis:
    """A cached Redis client for a URL (redis://, rediss:// or unix://)."""
    if url not in _connections:
        _connections[url] = Redis.from_url(url, health_check_interval=30)
    return _connections[url]


def _job_data(func: str, args, job_id: str | None):
    retry = RETRIES.get(func)
    return Queue.prepare_data(func, args=tuple(args), job_id=job_id, timeout=DEFAULT_TIMEOUT,
                              retry=Retry(max=retry[0], interval=retry[1]) if retry else None,
                              result_ttl=300, failure_ttl=30 * 24 * 3600)


def enqueue(redis: Redis, func: str, *args, queue: str = "default", job_id: str | None = None):
    """Enqueue `func` (a dotted name under jobs/) with its retry policy."""
    return enqueue_many(redis, [(func, args, queue, job_id)])[0]


def enqueue_many(redis: Redis, jobs: list[tuple]) -> list:
    """Enqueue (func, args, queue, job_id) tuples in one pipeline per queue."""
    by_queue: dict[str, list] = {}
    for func, args, name, job_id in jobs:
        by_queue.setdefault(name, []).append(_job_data(func, args, job_id))
    enqueued = []
    for name, datas in by_queue.items():
        enqueued += Queue(name, connection=redis).enqueue_many(datas)
    return enqueued


def add_outbox(session: Session, func: str, *args, queue: str = "default",
               delay: float = 0) -> OutboxMessage:
    """Record a job to run once the caller's transaction commits."""
    row = OutboxMessage(func=func, args=list(args), queue=queue,
                        available_at=utcnow() + timedelta(seconds=delay))
    session.add(row)
    session.flush()
    session.info.setdefault("outbox_ids", []).append(row.id)
    return row


def drain_outbox(db: Database, redis: Redis, *, ids: list[str] | None = None, limit: int = 500,
                 lease: int = 30) -> int:
    """Enqueue committed, due outbox rows; returns how many were enqueued.

    Claim (one UPDATE) → enqueue (one pipeline) → mark enqueued (one transaction). A
    crash after the claim leaves the rows for the next drain once the lease lapses, so a job
    may be enqueued twice but never lost: jobs are idempotent."""
    with db.session() as session:
        stmt = select(OutboxMessage.id).where(OutboxMessage.enqueued_at.is_(None),
                                              OutboxMessage.available_at <= utcnow())
        if ids is not None:
            stmt = stmt.where(OutboxMessage.id.in_(ids))
        candidates = list(session.scalars(stmt.order_by(OutboxMessage.id).limit(limit)))
        won = claim_leases(session, OutboxMessage, candidates, lease,
                           OutboxMessage.enqueued_at.is_(None),
                           attempts=OutboxMessage.attempts + 1) if candidates else []
        rows = session.execute(select(OutboxMessage.id, OutboxMessage.func, OutboxMessage.args,
                                      OutboxMessage.queue)
                               .where(OutboxMessage.id.in_(won))).all() if won else []
    if not rows:
        return 0
    enqueue_many(redis, [(r.func, r.args, r.queue, r.id) for r in rows])
    with db.session() as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.id.in_(won))
                        .values(enqueued_at=utcnow(), job_id=OutboxMessage.id))
    return len(rows)


def pending_outbox(session: Session) -> int:
    """Rows written but not yet handed to Redis (shown on the operator page)."""
    from sqlalchemy import func
    return session.scalar(select(func.count()).select_from(OutboxMessage)
                          .where(OutboxMessage.enqueued_at.is_(None))) or 0


def worker_name() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"


def write_heartbeat(redis: Redis, name: str, ttl: int) -> None:
    redis.set(HEARTBEAT_KEY + name, str(time.time()), ex=ttl)


def live_workers(redis: Redis) -> list[str]:
    """Names of workers whose heartbeat has not expired."""
    return sorted(k.decode().removeprefix(HEARTBEAT_KEY)
                  for k in redis.scan_iter(HEARTBEAT_KEY + "*"))


def worker_heartbeats(redis: Redis) -> dict[str, float]:
    """Live workers and the seconds since each one's last heartbeat."""
    names = live_workers(redis)
    stamps = redis.mget([HEARTBEAT_KEY + n for n in names]) if names else []
    now = time.time()
    return {n: max(0.0, now - float(s)) for n, s in zip(names, stamps) if s is not None}


def queue_states(redis: Redis, names) -> dict[str, dict[str, int]]:
    """Per queue: jobs waiting, running, scheduled (retries, delays), deferred and failed."""
    states = {}
    for name in names:
        q = Queue(name, connection=redis)
        states[name] = {"queued": q.count, "started": q.started_job_registry.count,
                        "scheduled": q.scheduled_job_registry.count,
                        "deferred": q.deferred_job_registry.count,
                        "failed": q.failed_job_registry.count}
    return states


def eviction_warning(redis: Redis) -> str | None:
    """A warning when Redis may evict keys (queued jobs, rate limits); None when it will not."""
    try:
        policy = redis.info("memory").get("maxmemory_policy")
    except Exception as exc:  # noqa: BLE001 - managed services may hide INFO
        return (f"could not read Redis maxmemory-policy ({type(exc).__name__}); make sure it "
                "is noeviction, or queued jobs can be dropped silently")
    if policy in (None, "noeviction"):
        return None
    return (f"redis maxmemory-policy is {policy}: Redis may evict queued jobs and rate-limit "
            "counters under memory pressure; set maxmemory-policy noeviction")
