"""gunicorn settings shared by `make run` and `make serve` (passed with -c)."""
import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
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
# Behind a reverse proxy, the proxy terminates slow clients; keep-alive to it stays short.
keepalive = 5
graceful_timeout = 30
timeout = 120  # manifest uploads can be large


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
