"""B9: the batch page and its progress fragment for a 100,000-item batch under 16 concurrent
clients, served the way `make run` serves (gunicorn with scripts/gunicorn_conf.py, SQLite).

The batch is a third done, so the first page of the items table shows succeeded items with
their results and feedback forms (the heaviest rows). The fragment is measured twice: every
poll a full render (the batch moved since the last poll), and every poll revalidated with
the ETag of the previous one (what a browser sends while the batch stands still).

Also counts SQL queries per request for a 100-item and a 100,000-item batch: they must not
grow with the batch. Targets: page p95 < 50 ms, fragment p95 < 25 ms, page HTML < 30 KB.
"""
from __future__ import annotations

import gzip
import http.client
import io
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests

from bench.common import bench_app, row, tmpdir
from bench.pipeline import free_port, manifest_bytes

CLIENTS = 16
GUNICORN_CONF = ROOT / "scripts" / "gunicorn_conf.py"
REQUESTS_PER_CLIENT = int(os.environ.get("BENCH_CONSOLE_REQUESTS", "100"))


def make_batch(app, workspace_id: str, n: int) -> str:
    from sqlalchemy import update

    from batchrouter import batches, files, quotes
    from batchrouter.extensions import quote_settings
    from batchrouter.models import Item

    rt = app.extensions["batchrouter"]
    with app.test_request_context():
        settings = quote_settings()
    with rt.db.session() as s:
        record, _ = files.store_manifest(
            s, rt.storage, workspace_id=workspace_id, mode="live",
            stream=io.BytesIO(manifest_bytes(n)), filename="b.jsonl", purpose="batch",
            models=quotes.model_operations(s), limits=settings.limits)
    with rt.db.session() as s:
        quote = quotes.create_quote(s, settings, workspace_id=workspace_id, mode="live",
                                    report=quotes.file_report(s, rt.storage, workspace_id,
                                                              record.id),
                                    controls=quotes.parse_controls({}), input_file_id=record.id)
        batch = batches.create_batch(s, quote=quote, source=batches.request_lines(
            s, rt.storage, workspace_id, {}, quote))
        # A third done, as a running batch would show: counters and the items themselves.
        batch.succeeded, batch.pending = n // 3, n - n // 3
        s.execute(update(Item).where(Item.batch_id == batch.id, Item.seq < n // 3)
                  .values(status="succeeded", attempts=1, result=RESULT_LINE))
        return batch.id


RESULT_LINE = json.dumps({
    "customer_item_id": "p-0", "status": "succeeded", "model": "sandbox-chat",
    "provider": "sandbox", "lane": "sandbox/sandbox-chat:sync",
    "output": {"text": "[sandbox] No: the ticket asks about an invoice address, not a refund."},
    "usage": {"input_tokens": 18, "output_tokens": 14}, "cost_usd": "0.000010",
    "response": {"id": "sbx-0", "object": "chat.completion"}}, separators=(",", ":"))


def count_queries(app, batch_id: str) -> dict:
    """SQL statements per request, through the test client with a signed-in session."""
    from sqlalchemy import event

    engine = app.extensions["batchrouter"].db.engine
    counter = {"n": 0}

    def bump(*_args):
        counter["n"] += 1

    client = app.test_client()
    login(client.get, client.post, lambda r: r.get_data(as_text=True))
    event.listen(engine, "before_cursor_execute", bump)
    out = {}
    for name, path, headers in (("page", f"/batches/{batch_id}", {}),
                                ("fragment", f"/batches/{batch_id}/progress",
                                 {"HX-Request": "true"})):
        counter["n"] = 0
        response = client.get(path, headers=headers)
        assert response.status_code == 200, response.status_code
        out[name] = counter["n"]
        out[name + "_bytes"] = len(response.data)
        out[name + "_gzip"] = len(gzip.compress(response.data))
        out[name + "_etag"] = response.headers.get("ETag")
    if out["fragment_etag"]:
        counter["n"] = 0
        response = client.get(f"/batches/{batch_id}/progress",
                              headers={"HX-Request": "true",
                                       "If-None-Match": out["fragment_etag"]})
        assert response.status_code == 304, response.status_code
        out["fragment_304"] = counter["n"]
    event.remove(engine, "before_cursor_execute", bump)
    return out


def login(get, post, text) -> None:
    page = get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', text(page)).group(1)
    response = post("/login", data={"email": "demo@batchrouter.local",
                                    "password": "batchrouter-demo", "csrf_token": token})
    assert response.status_code in (302, 303), response.status_code


def load(base: str, path: str, headers: dict) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    # Every client signs in before any is timed: a sign-in hashes a password (tens of ms of
    # CPU), and 16 of them in the measured window would be measured instead of the page.
    ready = threading.Barrier(CLIENTS)

    def client():
        s = requests.Session()
        login(lambda p: s.get(base + p, allow_redirects=False),
              lambda p, data: s.post(base + p, data=data, allow_redirects=False),
              lambda r: r.text)
        # Measured requests go through a bare connection (kept alive when the server does):
        # the load generator shares the 2 cores, and requests' own overhead would inflate
        # the figures.
        cookie = "; ".join(f"{c.name}={c.value}" for c in s.cookies)
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        mine = []
        ready.wait()
        for _ in range(REQUESTS_PER_CLIENT):
            t = time.perf_counter()
            conn.request("GET", path, headers={**headers, "Cookie": cookie})
            response = conn.getresponse()
            response.read()
            mine.append((time.perf_counter() - t) * 1000)
            assert response.status == 200, response.status
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


WRK_SCRIPT = """
done = function(summary, latency, requests)
  io.write(string.format("WRK %.3f %.3f %d %d\\n", latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, summary.requests, summary.errors.status))
end
"""


def wrk_load(base: str, path: str, headers: dict, tmp: str) -> dict | None:
    """16 connections from wrk (C, light on the shared cores); None when wrk is missing."""
    import shutil

    if not shutil.which("wrk"):
        return None
    s = requests.Session()
    login(lambda p: s.get(base + p, allow_redirects=False),
          lambda p, data: s.post(base + p, data=data, allow_redirects=False), lambda r: r.text)
    cookie = "; ".join(f"{c.name}={c.value}" for c in s.cookies)
    script = Path(tmp) / "report.lua"
    script.write_text(WRK_SCRIPT)
    args = ["wrk", "-t2", f"-c{CLIENTS}", "-d8s", "-s", str(script), "-H", f"Cookie: {cookie}"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run(args + [base + path], capture_output=True, text=True, check=True).stdout
    _tag, p50, p95, count, errors = out.strip().splitlines()[-1].split()
    return {"p50": float(p50), "p95": float(p95), "requests": int(count), "errors": int(errors)}


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def main() -> None:
    tmp = tmpdir()
    app, _secret, workspace_id = bench_app(tmp)
    logging.getLogger("batchrouter.access").setLevel(logging.WARNING)  # this process only
    small = make_batch(app, workspace_id, 100)
    big = make_batch(app, workspace_id, 100_000)
    queries_small, queries_big = count_queries(app, small), count_queries(app, big)
    port = free_port()
    env = dict(os.environ, DATABASE_URL=app.config["DATABASE_URL"], SECRET_KEY="bench",
               BATCHROUTER_STORAGE_ROOT=f"{tmp}/storage", BATCHROUTER_RATELIMIT_STORAGE_URI=
               "memory://", BATCHROUTER_LOGIN_LIMIT_IP="10000 per minute",
               BATCHROUTER_LOGIN_LIMIT_ACCOUNT="10000 per minute")
    env.pop("REDIS_URL", None)
    env["PROMETHEUS_MULTIPROC_DIR"] = f"{tmp}/prometheus"  # as `make run` sets it
    os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    # Workers and threads from the settings `make run` uses.
    server = subprocess.Popen([str(ROOT / ".venv/bin/gunicorn"), "-c", str(GUNICORN_CONF),
                               "--bind", f"127.0.0.1:{port}", "app:app"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.get(base + "/healthz", timeout=5)
                break
            except requests.RequestException:
                time.sleep(0.1)
        load(base, f"/batches/{big}", {})  # warm up both processes
        page = load(base, f"/batches/{big}", {})
        fragment = load(base, f"/batches/{big}/progress", {"HX-Request": "true"})
        wrk_page = wrk_load(base, f"/batches/{big}", {}, tmp)
        wrk_fragment = wrk_load(base, f"/batches/{big}/progress", {"HX-Request": "true"}, tmp)
        wrk_conditional = wrk_load(base, f"/batches/{big}/progress",
                                   {"HX-Request": "true",
                                    "If-None-Match": queries_big["fragment_etag"]}, tmp) \
            if queries_big["fragment_etag"] else None
    finally:
        server.terminate()
        server.wait(10)
    print(f"bench/console.py — 100,000-item batch, {CLIENTS} concurrent clients, "
          f"gunicorn {gunicorn_shape()}, SQLite")
    print(row("batch page p50 / p95 (Python clients)",
              f"{statistics.median(page):.1f} / {p95(page):.1f} ms",
              "target p95 < 50 ms", p95(page) < 50))
    print(row("progress fragment p50 / p95 (Python clients)",
              f"{statistics.median(fragment):.1f} / {p95(fragment):.1f} ms",
              "target p95 < 25 ms", p95(fragment) < 25))
    for name, result, target in (("batch page", wrk_page, 50),
                                 ("progress fragment", wrk_fragment, 25),
                                 ("progress fragment, revalidated (304)", wrk_conditional, 25)):
        if result is not None:
            print(row(f"{name} p50 / p95 (wrk, {result['requests']:,} requests, "
                      f"{result['errors']} errors)",
                      f"{result['p50']:.1f} / {result['p95']:.1f} ms",
                      f"target p95 < {target} ms", result["p95"] < target and not result["errors"]))
    print(row("queries per page (100 items → 100,000 items)",
              f"{queries_small['page']} → {queries_big['page']}", "independent of size",
              queries_small["page"] == queries_big["page"]))
    print(row("queries per fragment (100 items → 100,000 items)",
              f"{queries_small['fragment']} → {queries_big['fragment']}", "independent of size",
              queries_small["fragment"] == queries_big["fragment"]))
    if "fragment_304" in queries_big:
        print(row("queries per revalidated fragment (304)", f"{queries_big['fragment_304']}"))
    print(row("page HTML (gzip) / fragment HTML",
              f"{queries_big['page_bytes'] / 1024:.1f} ({queries_big['page_gzip'] / 1024:.1f})"
              f" / {queries_big['fragment_bytes'] / 1024:.1f} KB", "target < 30 KB (< 5 KB gz)",
              queries_big["page_bytes"] < 30 * 1024 and queries_big["page_gzip"] < 5 * 1024))


def gunicorn_shape() -> str:
    """Processes and threads as scripts/gunicorn_conf.py (or GUNICORN_CMD_ARGS) sets them."""
    namespace: dict = {}
    exec(compile(GUNICORN_CONF.read_text(), str(GUNICORN_CONF), "exec"), namespace)  # noqa: S102
    extra = os.environ.get("GUNICORN_CMD_ARGS")
    workers, threads = namespace["workers"], namespace["threads"]
    shape = f"{workers} sync processes" if threads == 1 else \
        f"{workers} processes × {threads} threads (gthread)"
    return shape + (f" ({extra})" if extra else "")


if __name__ == "__main__":
    main()
