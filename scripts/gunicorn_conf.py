"""gunicorn settings shared by `make run`, `make serve` and bench/console.py (passed with -c).

Serving shape: single-threaded (sync) worker processes, one more than the cores.

Console and API requests are CPU-bound Python (1–3 ms each; SQLite reads hit the page cache),
so only processes add capacity: threads of one process take turns on its GIL (with 4 threads
a request spent 3× its CPU time inside the app, waiting). The previous 2 processes × 4
threads also spread the load badly. Keep-alive ties each client connection to the process
that accepted it, and a gthread process accepts whatever arrives, busy or not: 16 clients
split 9/8, 14/3 or 16/1 across the two processes, and at 16/1 one process burned a core while
the other idled (8.1 s vs 0.05 s of CPU over one wrk run); the ~175 req/s the page measured
before is one core's worth. A sync process takes a connection only when it is idle, serves one request
and closes it, so the kernel's accept queue hands each request to a free process: the load
is spread evenly by construction. (`--reuse-port` does not help: gunicorn opens the
listening socket once in the master, so every process shares that one accept queue.)

The trade-off is slow clients. A sync process is held for the whole request: a large
manifest uploaded (or a results file downloaded) over a slow link holds one process until it
is done, and is cut off after `timeout`. Behind the reverse proxy that terminates TLS in
production, the proxy buffers request and response bodies (nginx does by default), so a
process only ever talks to a fast client. Locally (`make run`) uploads are fast, and parsing
a large manifest is CPU work that holds one process whatever the worker class (with threads
it would also hold that process's GIL and slow every console request it serves): the extra
process keeps the console served while one upload runs. Set WEB_CONCURRENCY higher to keep
more requests of that kind in flight, or WEB_THREADS > 1 to go back to threads (gthread).
"""
import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", len(os.sched_getaffinity(0)) + 1))
threads = int(os.environ.get("WEB_THREADS", "1"))  # 1: the sync worker class
# BatchRouter writes one access line per request itself (batchrouter.access, with request id
# and workspace); gunicorn's own access log would duplicate it.
accesslog = None
errorlog = "-"
if os.environ.get("LOG_FORMAT") == "json":
    # gunicorn's own lines (boot, worker exits, timeouts) as JSON too, on their own handler:
    # the app's handler is installed on the root logger by each web process.
    logconfig_dict = {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": "batchrouter.logs.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": "INFO", "handlers": []},
        "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["stderr"],
                                       "propagate": False}},
    }
# Only threaded workers keep connections open; behind a reverse proxy keep it short.
keepalive = 5
graceful_timeout = 30
timeout = 120  # a request (a large manifest upload, a download) must finish within this
# The heartbeat file every worker touches after each request: in memory, not on disk.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None


def post_worker_init(worker):
    """The app is loaded: freeze what is alive now (imports, app, catalogs: ~180k objects)
    out of the garbage collector's reach. Otherwise every full collection walks all of it:
    a 50–100 ms pause in the middle of some request every few thousand pages."""
    import gc

    gc.collect()
    gc.freeze()


def child_exit(server, worker):
    """Drop a dead web process's live gauges from the shared metrics directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def when_ready(server):
    """Start-up check: an evicting Redis silently drops queued jobs and rate-limit counters."""
    url = os.environ.get("REDIS_URL")
    if not url:
        return
    from redis import Redis

    from batchrouter import queue

    client = Redis.from_url(url, socket_timeout=5)
    try:
        warning = queue.eviction_warning(client)
    finally:
        client.close()
    if warning:
        server.log.warning(warning)
