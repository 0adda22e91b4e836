"""`make serve` (scripts/serve.sh): refuses to start half-configured or on an old schema, then
runs gunicorn, workers and the internal metrics listener, and stops them all on SIGTERM."""
import os
import signal
import subprocess

import pytest
import requests

from batchrouter import queue
from tests.conftest import ROOT, free_port, wait_for


def serve_env(database_url, redis_url, tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHROUTER_")}
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, SECRET_KEY="serve-test",
               BASE_URL="http://127.0.0.1", HOST="127.0.0.1", PORT=str(free_port()),
               WEB_CONCURRENCY="1", WORKERS="1",
               PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"),
               BATCHROUTER_STORAGE_ROOT=str(tmp_path / "storage"), **extra)
    return env


def run_serve(env, timeout=60):
    return subprocess.run(["bash", "scripts/serve.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_serve_refuses_without_the_shared_settings(clean_db, redis_url, tmp_path):
    env = serve_env(clean_db, redis_url, tmp_path)
    del env["SECRET_KEY"]
    result = run_serve(env)
    assert result.returncode == 2 and "set SECRET_KEY" in result.stderr


def test_serve_refuses_a_database_behind_the_code(redis_url, tmp_path):
    env = serve_env(f"sqlite:///{tmp_path / 'empty.db'}", redis_url, tmp_path)
    result = run_serve(env)
    assert result.returncode == 3 and "make migrate" in result.stderr


def test_serve_runs_web_workers_and_metrics_then_stops(clean_db, redis, redis_url, tmp_path):
    metrics_port = free_port()
    env = serve_env(clean_db, redis_url, tmp_path,
                    BATCHROUTER_METRICS_BIND=f"127.0.0.1:{metrics_port}")
    base = f"http://127.0.0.1:{env['PORT']}"
    redis.config_set("maxmemory-policy", "allkeys-lru")  # the start-up check must warn
    proc = subprocess.Popen(["bash", "scripts/serve.sh"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        def ready():
            try:
                return requests.get(base + "/readyz", timeout=10).status_code == 200
            except requests.RequestException:  # not listening yet, or slow on a busy machine
                return False
        wait_for(ready, timeout=60, interval=0.3)
        assert len(queue.live_workers(redis)) == 1
        text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert "batchrouter_workers_live 1.0" in text
        assert 'batchrouter_http_requests_total{method="GET",route="/readyz"' in text
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    finally:
        redis.config_set("maxmemory-policy", "noeviction")
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert "maxmemory-policy is allkeys-lru" in output  # gunicorn and the worker both warn
    with pytest.raises(requests.ConnectionError):
        requests.get(base + "/healthz", timeout=2)
    wait_for(lambda: not queue.live_workers(redis), timeout=10)


def test_eviction_warning_names_the_policy(redis):
    assert queue.eviction_warning(redis) is None
    redis.config_set("maxmemory-policy", "volatile-lru")
    try:
        assert "volatile-lru" in queue.eviction_warning(redis)
    finally:
        redis.config_set("maxmemory-policy", "noeviction")
