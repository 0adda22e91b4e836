"""The worker entry: build the app once, tick the scheduler in a thread, run RQ's loop.

A SimpleWorker runs jobs in this process (no fork per job): the app, its engine and pools are
built once, and a crashed job is recovered from database state by sweeps, not by RQ.
"""
from __future__ import annotations

import logging
import threading
import time

from rq import SimpleWorker

from batchrouter import logs, metrics, queue, scheduler
from jobs import runtime

log = logging.getLogger(__name__)


class Worker(SimpleWorker):
    """SimpleWorker that logs with the job's id and counts each job's outcome per queue."""

    def perform_job(self, job, queue, execution) -> bool:
        started = time.perf_counter()
        with logs.bound(job_id=job.id):
            ok = super().perform_job(job, queue, execution)
        # A failed job RQ will try again is back to scheduled/queued: count it as a retry.
        outcome = "succeeded" if ok else (
            "retried" if job.get_status(refresh=False) in ("scheduled", "queued") else "failed")
        metrics.job_outcome(queue.name, outcome, time.perf_counter() - started)
        return ok


def tick(app, name: str) -> None:
    """One scheduler tick: heartbeat, periodic tasks due, outbox drain."""
    rt = app.extensions["batchrouter"]
    cfg = app.config
    queue.write_heartbeat(rt.redis, name, cfg["BATCHROUTER_HEARTBEAT_TTL"])
    with rt.db.session() as session:
        scheduler.claim_due(session)
    queue.drain_outbox(rt.db, rt.redis, lease=cfg["BATCHROUTER_OUTBOX_LEASE"])


def _tick_forever(app, name: str, stop: threading.Event) -> None:
    interval = app.config["BATCHROUTER_SCHEDULER_TICK"]
    while not stop.is_set():
        try:
            tick(app, name)
        except Exception:
            log.warning("scheduler tick failed", exc_info=True)
        stop.wait(interval)


def run_worker(app, queues: tuple[str, ...], *, burst: bool = False) -> None:
    """Run until stopped (or, with burst, until the queues are empty)."""
    runtime.install(app)
    rt = app.extensions["batchrouter"]
    was_writer, rt.db.writer = rt.db.writer, True  # SQLite: BEGIN IMMEDIATE (db.make_engine)
    if not rt.redis_url:
        raise SystemExit("REDIS_URL is not set; the worker needs Redis.")
    warning = queue.eviction_warning(rt.redis)
    if warning:
        log.warning(warning)
    with rt.db.session() as session:
        scheduler.register_defaults(session, intervals={
            "batch-sweep": app.config["BATCHROUTER_SWEEP_INTERVAL"],
            "retention": app.config["BATCHROUTER_RETENTION_INTERVAL"],
            "billing-reconcile": app.config["BATCHROUTER_RECONCILE_INTERVAL"],
            "low-balance": app.config["BATCHROUTER_LOW_BALANCE_INTERVAL"]})
    name = queue.worker_name()
    stop = threading.Event()
    ticker = threading.Thread(target=_tick_forever, args=(app, name, stop), daemon=True)
    if burst:
        tick(app, name)
    else:
        ticker.start()
    worker = Worker(list(queues), connection=rt.redis, name=name)
    try:
        with app.app_context():
            worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
    finally:
        rt.db.writer = was_writer
        stop.set()
        rt.redis.delete(queue.HEARTBEAT_KEY + name)
