"""The production shape on one machine, for bench/scale.py and bench/load.py.

A private Redis (noeviction), a throwaway PostgreSQL database (the local server on
127.0.0.1:5432 when one answers, else a private cluster made with initdb), gunicorn with N
processes and M `flask worker` processes, every process with its own log file and one shared
PROMETHEUS_MULTIPROC_DIR. Everything it starts it stops, and the database is dropped.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres "
                           "dbname=postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001, S110 - not up yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


class Cluster:
    def __init__(self, name: str, settings: dict[str, str]):
        self.tmp = Path(os.environ.get("BENCH_TMP") or "/tmp") / f"br-{name}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir(parents=True)
        self.settings = settings
        self.procs: dict[str, subprocess.Popen] = {}
        self.worker_seq = 0
        self.pg_cluster: Path | None = None
        self.admin_dsn = ADMIN_DSN
        self.db_name = f"br_{name}_{uuid.uuid4().hex[:8]}"
        self.database_url = ""
        self.redis_url = ""
        self.base_url = ""

    # --- infrastructure -----------------------------------------------------------------

    def start_redis(self) -> None:
        port = free_port()
        self._spawn("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                              "--save", "", "--appendonly", "no",
                              "--maxmemory-policy", "noeviction", "--dir", str(self.tmp)])
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        import redis
        wait_until(lambda: redis.Redis.from_url(self.redis_url).ping(), 10, "redis")

    def start_postgres(self) -> str:
        """Create the throwaway database; returns where PostgreSQL runs."""
        import psycopg

        try:
            psycopg.connect(self.admin_dsn, connect_timeout=3).close()
            where = "local server 127.0.0.1:5432"
        except psycopg.OperationalError:
            self._private_postgres()
            where = "private cluster (initdb)"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        params = dict(p.split("=", 1) for p in self.admin_dsn.split())
        self.database_url = (f"postgresql+psycopg://{params['user']}@{params['host']}:"
                             f"{params['port']}/{self.db_name}")
        return where

    def _private_postgres(self) -> None:
        initdb = shutil.which("initdb") or next(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        pg_ctl = Path(initdb).with_name("pg_ctl")
        self.pg_cluster = self.tmp / "pg"
        port = free_port()
        user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if user:
            os.chmod(self.tmp, 0o777)
        subprocess.run(user + [str(initdb), "-D", str(self.pg_cluster), "-U", "postgres",
                               "--auth=trust"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(user + [str(pg_ctl), "-D", str(self.pg_cluster), "-w", "-l",
                               str(self.tmp / "pg.log"), "-o",
                               f"-p {port} -k {self.tmp} -c listen_addresses=127.0.0.1",
                               "start"], check=True, stdout=subprocess.DEVNULL)
        self.admin_dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        self._pg_ctl = user + [str(pg_ctl), "-D", str(self.pg_cluster), "-m", "fast", "stop"]

    def pg_stat(self, column: str) -> int:
        import psycopg

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            return conn.execute(f"SELECT {column} FROM pg_stat_database WHERE datname = %s",
                                (self.db_name,)).fetchone()[0]

    # --- the application ----------------------------------------------------------------

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHROUTER_",))}
        env.update(DATABASE_URL=self.database_url, REDIS_URL=self.redis_url,
                   SECRET_KEY="bench-secret", BASE_URL=self.base_url or "http://127.0.0.1",
                   PROMETHEUS_MULTIPROC_DIR=str(self.tmp / "prometheus"), LOG_FORMAT="json",
                   BATCHROUTER_STORAGE_ROOT=str(self.tmp / "storage"), **self.settings)
        return env

    def app(self):
        """An app object in this process (setup and verification only)."""
        from batchrouter import create_app

        cfg = {k: v for k, v in self.env().items()
               if k.startswith("BATCHROUTER_") or k in ("DATABASE_URL", "REDIS_URL",
                                                        "SECRET_KEY", "BASE_URL")}
        from batchrouter.config import from_environment
        return create_app(from_environment(cfg))

    def migrate(self) -> None:
        (self.tmp / "prometheus").mkdir(exist_ok=True)
        subprocess.run([str(BIN / "flask"), "--app", "app", "db", "upgrade"], cwd=ROOT,
                       env=self.env(), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def start_web(self, processes: int | None = None, threads: int | None = None) -> str:
        """gunicorn with scripts/gunicorn_conf.py: the production shape (one sync process per
        core plus one) unless processes/threads say otherwise; returns the shape as
        "processes×threads"."""
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        processes = processes or len(os.sched_getaffinity(0)) + 1
        threads = threads or 1
        env = {**self.env(), "HOST": "127.0.0.1", "PORT": str(port),
               "WEB_CONCURRENCY": str(processes), "WEB_THREADS": str(threads)}
        self._spawn("web", [str(BIN / "gunicorn"), "-c", "scripts/gunicorn_conf.py",
                            "app:app"], env=env)
        import requests
        wait_until(lambda: requests.get(self.base_url + "/healthz", timeout=2).ok, 30, "web")
        return f"{processes}×{threads}"

    def start_worker(self) -> str:
        self.worker_seq += 1
        name = f"worker-{self.worker_seq}"
        self._spawn(name, [str(BIN / "flask"), "--app", "app", "worker"])
        return name

    def workers(self) -> list[str]:
        return [n for n, p in self.procs.items() if n.startswith("worker-") and p.poll() is None]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(30)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def all_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.tmp.glob("*.log"))

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> None:
        out = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(argv, cwd=ROOT, env=env or self.env(), stdout=out,
                                            stderr=subprocess.STDOUT)

    def stop(self, keep: bool = False) -> None:
        # The app processes first, Redis last: workers must not lose Redis while stopping.
        for group in ([p for n, p in self.procs.items() if n != "redis"],
                      [p for n, p in self.procs.items() if n == "redis"]):
            for proc in group:
                if proc.poll() is None:
                    proc.terminate()
            for proc in group:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if self.database_url:
            import psycopg
            try:
                with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            except psycopg.OperationalError:
                pass
        if self.pg_cluster is not None:
            subprocess.run(self._pg_ctl, stdout=subprocess.DEVNULL, check=False)
        if not keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


def seed_workspaces(app, count: int, keys_each: int = 1,
                    credits: int = 10_000_000_000) -> list[tuple[str, list[str]]]:
    """The catalog, then `count` funded workspaces with API keys: [(workspace_id, [secret])]."""
    from batchrouter import accounts, apikeys, catalog, ledger

    out = []
    with app.app_context(), app.extensions["batchrouter"].db.session() as s:
        catalog.seed(s)
        settings = accounts.Settings(secret="bench", base_url="http://127.0.0.1",
                                     starter_credits=0)
        for n in range(count):
            user = accounts.create_user(s, f"bench{n}@example.com", "bench password 123",
                                        settings, verified=True)
            workspace_id = accounts.memberships_of(s, user.id)[0].workspace_id
            ledger.grant(s, workspace_id, credits, kind="promo", reason="bench",
                         idempotency_key=f"bench:{workspace_id}")
            secrets = [apikeys.create_key(s, workspace_id=workspace_id, creator_id=user.id,
                                          creator_role="owner", name=f"bench {k}",
                                          scopes=None)[1] for k in range(keys_each)]
            out.append((workspace_id, secrets))
    return out
