"""The test rig: app, database, real Redis, real RQ workers, live server, Chromium, stubs.

Database: SQLite in a temp dir by default; TEST_DATABASE_URL (PostgreSQL) for the `-m pg`
subset. The schema is built once per run through the Alembic migrations, and every test starts
from empty tables. Redis: REDIS_URL/TEST_REDIS_URL (make test starts one) or a private
redis-server started here; it is flushed before each test.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from batchrouter import create_app
from batchrouter.db import make_engine
from batchrouter.models import Base

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_collection_modifyitems(config, items):
    # On PostgreSQL only the pg subset is meaningful; the Makefile runs it with -m pg.
    if os.environ.get("TEST_DATABASE_URL") and not config.getoption("-m"):
        skip = pytest.mark.skip(reason="TEST_DATABASE_URL set: only -m pg tests run")
        for item in items:
            if "pg" not in item.keywords:
                item.add_marker(skip)


# --- Redis ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def redis_url():
    url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if not binary:
        pytest.exit("redis-server is not installed; run `make test`", returncode=3)
    port = free_port()
    workdir = tempfile.mkdtemp()
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    import redis
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(5)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis(redis_url):
    from batchrouter import queue

    conn = queue.connect(redis_url)
    conn.flushdb()
    yield conn


# --- Database ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    url = os.environ.get("TEST_DATABASE_URL") or \
        f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    from batchrouter.migrate import upgrade

    engine = make_engine(url)
    if not url.startswith("sqlite"):
        with engine.begin() as conn:  # a clean schema even if an earlier run died midway
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'))
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    upgrade(url)
    return url


def truncate_all(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        if url.startswith("sqlite"):
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
        else:
            # A session a test forgot to close would make TRUNCATE wait forever.
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                              "AND state LIKE 'idle in transaction%'"))
            names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def clean_db(database_url):
    truncate_all(database_url)
    return database_url


# --- App -----------------------------------------------------------------------------------

def app_config(database_url: str, redis_url: str, **overrides) -> dict:
    return {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "SECRET_KEY": "test-secret",
            "BASE_URL": "http://127.0.0.1:5000", "RATELIMIT_KEY_PREFIX": uuid.uuid4().hex,
            **overrides}


@pytest.fixture
def app_overrides(request):
    """Configuration overrides: parametrize with indirect=True, or override the fixture in a
    module for all of its tests."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
def app(clean_db, redis, redis_url, app_overrides):
    application = create_app(app_config(clean_db, redis_url, **app_overrides))
    application.testing = True
    yield application
    application.extensions["batchrouter"].db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db(app):
    return app.extensions["batchrouter"].db


@pytest.fixture
def session(db):
    s = db.sessionmaker()
    yield s
    s.close()


# --- Workers -------------------------------------------------------------------------------

def run_burst(app) -> None:
    """Run queued jobs in this process until the queues are empty (outbox drained first)."""
    from jobs.worker import run_worker

    run_worker(app, app.config["BATCHROUTER_QUEUES"], burst=True)


@pytest.fixture
def worker(app):
    """Call to process everything queued so far, in-process, on real Redis."""
    return lambda: run_burst(app)


class WorkerProcess:
    """`flask worker` as a real subprocess (for crash and timing tests)."""

    def __init__(self, env: dict):
        self.env = env
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"],
                                     cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        return self

    def kill(self, sig=9):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def output(self) -> str:
        if self.proc and self.proc.poll() is not None and self.proc.stdout:
            return self.proc.stdout.read()
        return ""


def subprocess_env(app) -> dict:
    env = dict(os.environ)
    for key in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "BASE_URL", "RESEND_API_KEY",
                "RESEND_API_URL"):
        if app.config.get(key):
            env[key] = str(app.config[key])
        else:
            env.pop(key, None)
    for key, value in app.config.items():
        if key.startswith("BATCHROUTER_") and isinstance(value, (int, float, str)) \
                and not isinstance(value, bool):
            env[key] = str(value)
    return env


@pytest.fixture
def worker_process(app):
    """Factory: start real worker subprocesses; all are killed at teardown."""
    started = []

    def start():
        wp = WorkerProcess(subprocess_env(app)).start()
        started.append(wp)
        return wp

    yield start
    for wp in started:
        wp.kill(15)


def wait_for(predicate, timeout: float = 15, interval: float = 0.1):
    """Poll until predicate() is truthy; return its value or fail with the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


# --- Live server and browser ---------------------------------------------------------------

class LiveServer:
    def __init__(self, app, port: int):
        from werkzeug.serving import make_server

        self.app = app
        self.url = f"http://127.0.0.1:{port}"
        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture
def live_server(clean_db, redis, redis_url, app_overrides):
    """The app served over real HTTP on a free loopback port (BASE_URL matches it)."""
    port = free_port()
    application = create_app(app_config(clean_db, redis_url, BASE_URL=f"http://127.0.0.1:{port}",
                                        **app_overrides))
    server = LiveServer(application, port).start()
    yield server
    server.stop()
    application.extensions["batchrouter"].db.engine.dispose()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": "/usr/bin/chromium",
            "args": CHROMIUM_ARGS}


@pytest.fixture
def seeded_catalog(db):
    """The shipped catalog, loaded into the (emptied) database."""
    from batchrouter import catalog

    with db.session() as s:
        catalog.seed(s)
