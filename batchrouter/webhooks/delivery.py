"""The delivery pump: claim due deliveries, send them concurrently, record every attempt.

One pump job delivers many events at once on a thread pool, with at most `per_endpoint`
requests in flight per endpoint, so a slow or hanging receiver holds a few threads while every
other endpoint keeps flowing. Claims are leases on the delivery rows (a crashed pump's rows
come back once the lease lapses); results are written in small batches, one transaction each.
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from batchrouter import artifacts, metrics, queue
from batchrouter.db import Database, claim_leases, iso, utcnow
from batchrouter.models import (
    Batch,
    File,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from batchrouter.webhooks import endpoints, sending
from batchrouter.webhooks.events import PUMP_JOB, QUEUE, TERMINAL_TYPES

log = logging.getLogger(__name__)

# Seconds after attempt 1, 2, …: about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
MAX_ATTEMPTS = len(SCHEDULE) + 1
JITTER = 0.1
DISABLE_AFTER = timedelta(days=5)
LEASE = 60  # seconds; longer than one attempt (15 s timeout) plus recording


@dataclass
class Settings:
    allow_private: bool
    base_url: str
    secret_key: str
    artifact_ttl: int = 900
    threads: int = 64
    per_endpoint: int = 4
    max_seconds: float = 240.0
    timeout: float = sending.TIMEOUT
    resolver: object = None


@dataclass
class Job:
    delivery_id: str
    endpoint_id: str
    url: str
    secrets: list
    event_id: str
    body: str


@dataclass
class Sent:
    job: Job
    started_at: object
    timestamp: int
    outcome: sending.Outcome


@dataclass
class Stats:
    attempts: int = 0
    succeeded: int = 0
    failed: int = 0
    outcomes: Counter = field(default_factory=Counter)


def next_delay(attempts_done: int, retry_after: float | None = None) -> float | None:
    """Seconds until the next attempt, or None when the schedule is exhausted."""
    if attempts_done >= MAX_ATTEMPTS:
        return None
    base = SCHEDULE[attempts_done - 1]
    delay = base * random.uniform(1 - JITTER, 1 + JITTER)
    if retry_after:
        delay = max(delay, min(retry_after, SCHEDULE[-1]))
    return delay


# --- claiming --------------------------------------------------------------------------------

def claim(db: Database, settings: Settings, limit: int, busy: Counter) -> list[Job]:
    """Lease up to `limit` due deliveries, skipping endpoints already at their cap."""
    now = utcnow()
    saturated = [e for e, n in busy.items() if n >= settings.per_endpoint]
    with db.session() as s:
        stmt = (select(WebhookDelivery.id, WebhookDelivery.endpoint_id)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(WebhookDelivery.status == "pending",
                       WebhookDelivery.next_attempt_at <= now,
                       or_(WebhookDelivery.lease_until.is_(None),
                           WebhookDelivery.lease_until < now),
                       WebhookEndpoint.status == "active"))
        if saturated:
            stmt = stmt.where(WebhookDelivery.endpoint_id.notin_(saturated))
        rows = s.execute(stmt.order_by(WebhookDelivery.next_attempt_at)
                         .limit(limit * 4)).all()
        room = Counter(busy)
        picked = []
        for delivery_id, endpoint_id in rows:
            if len(picked) < limit and room[endpoint_id] < settings.per_endpoint:
                room[endpoint_id] += 1
                picked.append(delivery_id)
        if not picked:
            return []
        # `status || ''`: a bare status test made SQLite walk the (status, next_attempt_at)
        # index over every pending delivery instead of looking up the picked ids.
        won = claim_leases(s, WebhookDelivery, picked, LEASE,
                           (WebhookDelivery.status + "") == "pending", now=now)
        return _jobs(s, settings, won, now)


def _jobs(s: Session, settings: Settings, won: list[str], now) -> list[Job]:
    if not won:
        return []
    rows = s.execute(select(WebhookDelivery.id, WebhookEndpoint, WebhookEvent)
                     .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                     .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                     .where(WebhookDelivery.id.in_(won))).all()
    return [Job(delivery_id, endpoint.id, endpoint.url,
                endpoints.signing_secrets(endpoint, now, settings.secret_key),
                event.id, _body(s, settings, event)) for delivery_id, endpoint, event in rows]


def _body(s: Session, settings: Settings, event: WebhookEvent) -> str:
    """The event body; a finished batch's body gains fresh signed links to its files."""
    if event.type not in TERMINAL_TYPES or not event.batch_id:
        return event.body
    batch = s.get(Batch, event.batch_id)
    payload = json.loads(event.body)
    base = settings.base_url.rstrip("/")
    for name, file_id in (("results_url", batch.results_file_id),
                          ("errors_url", batch.errors_file_id)):
        record = s.get(File, file_id) if file_id else None
        if record is not None:
            payload["data"][name] = artifacts.sign_url(settings.secret_key, base, record,
                                                       settings.artifact_ttl)["url"]
    return json.dumps(payload, separators=(",", ":"))


# --- sending ---------------------------------------------------------------------------------

def attempt(job: Job, settings: Settings) -> Sent:
    """Sign with a fresh timestamp (every attempt) and POST once."""
    started = utcnow()
    timestamp = int(time.time())
    if not job.secrets:  # never send unsigned: the attempt fails and follows the schedule
        return Sent(job, started, timestamp, sending.Outcome(
            None, 0, error="The signing secret cannot be read (SECRET_KEY changed): rotate it.",
            blocked=True))
    headers = sending.sign(job.event_id, job.body, job.secrets, timestamp)
    outcome = sending.post(job.url, job.body, headers, allow_private=settings.allow_private,
                           resolver=settings.resolver, timeout=settings.timeout)
    return Sent(job, started, timestamp, outcome)


def pump(db: Database, settings: Settings) -> Stats:
    """Deliver everything due until nothing is left (or max_seconds pass), then return."""
    stats = Stats()
    busy: Counter = Counter()
    inflight: dict = {}
    done_batch: list[Sent] = []
    deadline = time.monotonic() + settings.max_seconds
    last_flush = next_claim = time.monotonic()
    # Claim in batches (a claim is a few queries), and back off briefly when nothing was due.
    claim_batch = max(1, settings.threads // 4)
    with ThreadPoolExecutor(settings.threads, thread_name_prefix="webhook") as pool:
        while True:
            now = time.monotonic()
            free = settings.threads - len(inflight)
            if now < deadline and (not inflight or (free >= claim_batch and now >= next_claim)):
                claimed = claim(db, settings, free, busy)
                for job in claimed:
                    inflight[pool.submit(attempt, job, settings)] = job
                    busy[job.endpoint_id] += 1
                next_claim = now + (0 if claimed else 0.25)
            if not inflight:
                break
            finished, _ = wait(inflight, timeout=0.05, return_when=FIRST_COMPLETED)
            for future in finished:
                job = inflight.pop(future)
                busy[job.endpoint_id] -= 1
                done_batch.append(future.result())
            if done_batch and (len(done_batch) >= 200 or time.monotonic() - last_flush > 0.1
                               or not inflight):
                record(db, done_batch, settings, stats)
                done_batch, last_flush = [], time.monotonic()
    if done_batch:
        record(db, done_batch, settings, stats)
    if time.monotonic() >= deadline:
        with db.session() as s:  # more may be due: hand over to a fresh job
            queue.add_outbox(s, PUMP_JOB, queue=QUEUE)
    return stats


# --- recording -------------------------------------------------------------------------------

def record(db: Database, sent: list[Sent], settings: Settings, stats: Stats) -> None:
    """Write the attempts and move each delivery on: done, retried later, failed, disabled."""
    wake: set[int] = set()
    with db.session() as s, s.no_autoflush:  # one flush at commit, not one per attempt
        ids = [item.job.delivery_id for item in sent]
        loaded = {d.id: d for d in s.scalars(select(WebhookDelivery)
                                             .where(WebhookDelivery.id.in_(ids)))}
        # Held here: the identity map keeps unmodified objects only weakly, so s.get would
        # have gone back to the database for every attempt.
        owners = {e.id: e for e in s.scalars(select(WebhookEndpoint).where(
            WebhookEndpoint.id.in_({d.endpoint_id for d in loaded.values()})))}
        for item in sent:
            delivery = loaded[item.job.delivery_id]
            delay = _record_one(s, delivery, owners[delivery.endpoint_id], item, settings)
            stats.attempts += 1
            stats.outcomes[_outcome_label(item.outcome)] += 1
            if item.outcome.ok:
                stats.succeeded += 1
            elif delay is None:
                stats.failed += 1
            if delay is not None:
                wake.add(int(delay) + 1)
            metrics.webhook_delivery("delivered" if item.outcome.ok else
                                     "retrying" if delay is not None else "failed")
        for seconds in sorted(wake):  # one wake-up per distinct second, not per delivery
            queue.add_outbox(s, PUMP_JOB, queue=QUEUE, delay=seconds)


def _outcome_label(outcome: sending.Outcome) -> str:
    if outcome.ok:
        return "success"
    if outcome.blocked:
        return "blocked"
    if outcome.status_code is None:
        return "error"
    return "redirect" if 300 <= outcome.status_code < 400 else f"http_{outcome.status_code // 100}xx"


def _record_one(s: Session, delivery: WebhookDelivery, endpoint: WebhookEndpoint, item: Sent,
                settings: Settings) -> float | None:
    """Returns the retry delay when another attempt was scheduled."""
    now = utcnow()
    outcome = item.outcome
    delivery.attempts += 1
    s.add(WebhookAttempt(delivery_id=delivery.id, number=delivery.attempts,
                         started_at=item.started_at, signed_timestamp=item.timestamp,
                         status_code=outcome.status_code, latency_ms=outcome.latency_ms,
                         response_excerpt=(outcome.excerpt or None) and outcome.excerpt[:1000],
                         error=outcome.error, succeeded=outcome.ok))
    delivery.lease_until = None
    if delivery.status != "pending":  # stopped meanwhile (endpoint disabled or deleted)
        return None
    delivery.last_status_code, delivery.last_error = outcome.status_code, outcome.error
    if outcome.ok:
        delivery.status, delivery.finished_at, delivery.next_attempt_at = "succeeded", now, None
        endpoint.failing_since, endpoint.last_success_at = None, now
        return None
    endpoint.failing_since = endpoint.failing_since or now
    if outcome.status_code == 410:
        _finish_failed(delivery, now)
        endpoints.disable(s, endpoint, "the receiver answered 410 Gone", settings.base_url)
        return None
    if now - endpoint.failing_since >= DISABLE_AFTER:
        _finish_failed(delivery, now)
        endpoints.disable(s, endpoint, "every delivery failed for 5 days", settings.base_url)
        return None
    delay = next_delay(delivery.attempts, outcome.retry_after)
    if delay is None:
        _finish_failed(delivery, now)
        # One email per failing streak of the endpoint, however many deliveries run out.
        endpoints.notify_owners(s, endpoint, "webhook_failed", settings.base_url,
                                key=f"webhook-failed:{endpoint.id}:{iso(endpoint.failing_since)}",
                                attempts=delivery.attempts, event_type=delivery.event_type,
                                delivery_id=delivery.id, error=outcome.error or "")
        return None
    delivery.next_attempt_at = now + timedelta(seconds=delay)
    return delay


def _finish_failed(delivery: WebhookDelivery, now) -> None:
    delivery.status, delivery.finished_at, delivery.next_attempt_at = "failed", now, None


def wake_if_due(s: Session) -> bool:
    """Queue a pump when a delivery is due and not leased (lost wake-ups, dead pumps)."""
    now = utcnow()
    due = s.scalar(select(WebhookDelivery.id).where(
        WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now)).limit(1))
    if due is not None:
        queue.add_outbox(s, PUMP_JOB, queue=QUEUE)
    return due is not None
