"""Prometheus metrics (SPEC §11): counters recorded where things happen, state read at scrape.

Hot paths only bump counters and histograms through the small functions below
(`provider_call`, `breaker_state`, `webhook_delivery`, `job_outcome`, `http_request`). What
the database and Redis already know (queue depths, batches and items by status, ledger
totals, live workers) is read when /metrics is scraped, never counted twice.

Several processes (gunicorn workers, RQ workers) share one view when PROMETHEUS_MULTIPROC_DIR
points them at the same empty directory (scripts/run.sh and scripts/serve.sh set it up):
prometheus-client then keeps each process's values in files there and `render` sums them.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BREAKER_STATES = ("closed", "open", "half_open")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# Every metric lives in this registry (not the library's global one), so importing the module
# twice in a test session or alongside other instrumented code never clashes.
REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter("batchrouter_http_requests", "HTTP requests by route and status.",
                        ["method", "route", "status"], registry=REGISTRY)
HTTP_LATENCY = Histogram("batchrouter_http_request_duration_seconds",
                         "HTTP request latency by route.", ["method", "route"],
                         buckets=_LATENCY_BUCKETS, registry=REGISTRY)
PROVIDER_CALLS = Counter("batchrouter_provider_calls", "Provider calls by lane and outcome.",
                         ["lane", "outcome"], registry=REGISTRY)
PROVIDER_LATENCY = Histogram("batchrouter_provider_call_duration_seconds",
                             "Provider call latency by lane.", ["lane"],
                             buckets=_LATENCY_BUCKETS, registry=REGISTRY)
# 1 on the lane's current state, 0 on the others; the most recent write wins across processes.
BREAKER = Gauge("batchrouter_breaker_state", "Circuit breaker state per lane (1 = current).",
                ["lane", "state"], multiprocess_mode="mostrecent", registry=REGISTRY)
WEBHOOKS = Counter("batchrouter_webhook_deliveries", "Outbound webhook delivery attempts.",
                   ["outcome"], registry=REGISTRY)
JOBS = Counter("batchrouter_jobs", "RQ jobs finished, by queue and outcome.",
               ["queue", "outcome"], registry=REGISTRY)
JOB_LATENCY = Histogram("batchrouter_job_duration_seconds", "RQ job run time by queue.",
                        ["queue"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)


def _label(value) -> str:
    # Labels come from our own code, but a stray free-form string must not explode the series.
    return str(value)[:120]


def provider_call(lane: str, outcome: str, seconds: float) -> None:
    """One call to a provider on a lane (`outcome`: ok, error, timeout, rate_limited, …)."""
    PROVIDER_CALLS.labels(_label(lane), _label(outcome)).inc()
    PROVIDER_LATENCY.labels(_label(lane)).observe(max(0.0, seconds))


def provider_results(lane: str, results) -> None:
    """Count each item result of a sync chunk as one provider call, with its own latency."""
    for result in results or ():
        outcome = "ok" if result.ok else (result.error or {}).get("code") or "error"
        provider_call(lane, outcome, (result.latency_ms or 0) / 1000)


@contextmanager
def timed_provider_call(lane: str, *, count_success: bool = True):
    """Time one provider API call; an exception counts as outcome "exception" and propagates."""
    started = time.perf_counter()
    try:
        yield
    except Exception:
        provider_call(lane, "exception", time.perf_counter() - started)
        raise
    if count_success:
        provider_call(lane, "ok", time.perf_counter() - started)


def breaker_state(lane: str, state: str) -> None:
    """The circuit breaker of a lane is now `state` (closed, open or half_open)."""
    if state not in BREAKER_STATES:
        raise ValueError(f"unknown breaker state {state!r}")
    for candidate in BREAKER_STATES:
        BREAKER.labels(_label(lane), candidate).set(1 if candidate == state else 0)


def webhook_delivery(outcome: str) -> None:
    """One outbound webhook delivery attempt (`outcome`: delivered, failed, retrying, …)."""
    WEBHOOKS.labels(_label(outcome)).inc()


def job_outcome(queue: str, outcome: str, seconds: float | None = None) -> None:
    """An RQ job finished on `queue` (`outcome`: succeeded, failed, retried)."""
    JOBS.labels(_label(queue), _label(outcome)).inc()
    if seconds is not None:
        JOB_LATENCY.labels(_label(queue)).observe(max(0.0, seconds))


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    """One HTTP request answered (`route` is the URL rule, never the raw path)."""
    HTTP_REQUESTS.labels(method, _label(route), str(status)).inc()
    HTTP_LATENCY.labels(method, _label(route)).observe(max(0.0, seconds))


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _Exposition:
    """Every process's metrics (multi-process mode) or this one's, then the scraped state."""

    def __init__(self, state_collector=None):
        self.state = state_collector

    def collect(self):
        if multiprocess_dir():
            yield from multiprocess.MultiProcessCollector(None).collect()
        else:
            yield from REGISTRY.collect()
        if self.state is not None:
            yield from self.state.collect()


def render(state_collector=None) -> bytes:
    """The exposition text /metrics answers with."""
    registry = CollectorRegistry()
    registry.register(_Exposition(state_collector))
    return generate_latest(registry)


def serve(bind: str, state_collector=None) -> None:
    """Serve the exposition on an internal host:port without a token (`flask metrics serve`)."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):  # a scrape every few seconds is not news
            pass

    host, _, port = bind.rpartition(":")
    registry = CollectorRegistry()
    registry.register(_Exposition(state_collector))
    server = make_server(host.strip("[]") or "127.0.0.1", int(port), make_wsgi_app(registry),
                         handler_class=QuietHandler)
    log.info("serving metrics on http://%s/metrics", bind)
    server.serve_forever()


def mark_process_dead(pid: int) -> None:
    """Forget a dead process's live gauges (gunicorn's child_exit hook calls this)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)


class StateCollector:
    """Reads queue depths, workers, batches, items and ledger totals when scraped."""

    def __init__(self, runtime, queues):
        self.runtime = runtime
        self.queues = tuple(queues)

    def collect(self):
        errors = GaugeMetricFamily("batchrouter_scrape_error",
                                   "1 when a source could not be read for this scrape.",
                                   labels=["source"])
        for source, read in (("redis", self._redis), ("database", self._database)):
            try:
                yield from read()
                errors.add_metric([source], 0)
            except Exception:  # a scrape reports a broken source; it never answers 500
                log.warning("metrics: could not read %s", source, exc_info=True)
                errors.add_metric([source], 1)
        yield errors

    def _redis(self):
        from batchrouter import queue

        redis = self.runtime.redis
        depth = GaugeMetricFamily("batchrouter_queue_depth",
                                  "Jobs per RQ queue and registry.", labels=["queue", "state"])
        for name, states in queue.queue_states(redis, self.queues).items():
            for state, count in states.items():
                depth.add_metric([name, state], count)
        yield depth
        yield GaugeMetricFamily("batchrouter_workers_live",
                                "Workers whose heartbeat has not expired.",
                                value=len(queue.live_workers(redis)))

    def _database(self):
        from batchrouter import opsstats

        with self.runtime.db.session() as session:
            snapshot = opsstats.snapshot(session)
        yield GaugeMetricFamily("batchrouter_outbox_pending",
                                "Jobs written to the outbox, not yet handed to Redis.",
                                value=snapshot.outbox_pending)
        batches = GaugeMetricFamily("batchrouter_batches", "Batches by status.",
                                    labels=["status"])
        for status, count in snapshot.batches.items():
            batches.add_metric([status], count)
        yield batches
        items = GaugeMetricFamily("batchrouter_items", "Items by status (batch counters).",
                                  labels=["status"])
        for status, count in snapshot.items.items():
            items.add_metric([status], count)
        yield items
        ledger = GaugeMetricFamily("batchrouter_ledger_balance_micros",
                                   "Sum of ledger account balances by kind (micro-dollars).",
                                   labels=["kind"])
        for kind, total in snapshot.ledger.items():
            ledger.add_metric([kind], total)
        yield ledger
        money = GaugeMetricFamily("batchrouter_settled_micros",
                                  "Settled amounts over all batches (micro-dollars).",
                                  labels=["part"])
        for part, total in snapshot.settled.items():
            money.add_metric([part], total)
        yield money
