"""The transactional outbox and the periodic scheduler on real Redis and real RQ workers."""
import pytest
from rq import Queue
from sqlalchemy import select

from batchrouter import queue, scheduler
from batchrouter.models import OutboxMessage, PeriodicTask
from jobs import maintenance, runtime
from tests.conftest import wait_for
from tests.factories import read

pytestmark = pytest.mark.pg

PROBE = "tests.jobs.probe.record"


def probe_values(redis):
    return [v.decode() for v in redis.lrange("probe", 0, -1)]


def test_commit_enqueues_at_once_and_the_job_runs(app, db, redis, worker):
    with db.session() as s:
        queue.add_outbox(s, PROBE, "hello")
    [row] = read(db, lambda s: s.scalars(select(OutboxMessage)).all())
    assert row.enqueued_at is not None and Queue("default", connection=redis).count == 1
    worker()
    assert probe_values(redis) == ["hello"]


def test_rolled_back_transaction_enqueues_nothing(app, db, redis, worker):
    with pytest.raises(RuntimeError), db.session() as s:
        queue.add_outbox(s, PROBE, "ghost")
        raise RuntimeError("the state change failed")
    assert read(db, lambda s: s.scalars(select(OutboxMessage)).all()) == []
    assert Queue("default", connection=redis).count == 0
    worker()
    assert probe_values(redis) == []


def test_crash_between_commit_and_enqueue_loses_nothing(app, db, redis, worker, monkeypatch):
    # The process "dies" right after COMMIT: the fast-path enqueue never reaches Redis.
    def crash(*args, **kwargs):
        raise ConnectionError("redis went away")

    monkeypatch.setattr(queue, "enqueue_many", crash)
    with db.session() as s:
        queue.add_outbox(s, PROBE, "survivor")
    monkeypatch.undo()
    [row] = read(db, lambda s: s.scalars(select(OutboxMessage)).all())
    assert row.enqueued_at is None
    assert Queue("default", connection=redis).count == 0
    # The claim taken by the crashed drain holds until its lease lapses; then the sweep wins.
    with db.session() as s:
        s.get(OutboxMessage, row.id).lease_until = None
    runtime.install(app)
    assert maintenance.sweep_outbox() == 1
    worker()
    assert probe_values(redis) == ["survivor"]
    assert maintenance.sweep_outbox() == 0  # nothing left: enqueued exactly once


def test_a_live_lease_keeps_a_second_drainer_off(app, db, redis, monkeypatch):
    monkeypatch.setattr(queue, "enqueue_many", lambda *a, **k: (_ for _ in ()).throw(OSError()))
    with db.session() as s:
        queue.add_outbox(s, PROBE, "x")
    monkeypatch.undo()
    assert queue.drain_outbox(db, redis) == 0  # still leased by the failed fast path


def test_delayed_rows_wait_until_due(app, db, redis):
    with db.session() as s:
        queue.add_outbox(s, PROBE, "later", delay=3600)
    assert queue.drain_outbox(db, redis) == 0
    assert read(db, queue.pending_outbox) == 1


def test_periodic_task_runs_once_per_interval_across_workers(app, db, redis):
    with db.session() as s:
        scheduler.register_defaults(s, {"probe": (PROBE, 3600)})
    claims = []
    for _ in range(3):  # three workers ticking at the same moment
        with db.session() as s:
            claims.append(scheduler.claim_due(s))
    assert claims.count(["probe"]) == 1 and claims.count([]) == 2
    task = read(db, lambda s: s.get(PeriodicTask, "probe"))
    assert task.last_run_at is not None and task.next_run_at > task.last_run_at


def test_worker_process_heartbeat_and_periodic_sweep(app, db, redis, worker_process):
    """A real `flask worker` subprocess ticks: heartbeat, periodic sweep, outbox drain."""
    with db.session() as s:
        row = queue.add_outbox(s, PROBE, "from-tick", delay=1)
    wp = worker_process()
    wait_for(lambda: queue.live_workers(redis), timeout=20)
    wait_for(lambda: probe_values(redis) == ["from-tick"], timeout=20)
    assert read(db, lambda s: s.get(OutboxMessage, row.id)).enqueued_at is not None
    assert read(db, lambda s: s.get(PeriodicTask, "outbox-sweep")) is not None
    wp.kill(15)
    assert not queue.live_workers(redis)
