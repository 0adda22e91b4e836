"""Logging setup: human text by default, one JSON object a line when LOG_FORMAT=json.

Every line carries the context it was written in: request id and workspace id in a request,
job id, batch id and workspace id in a job. Jobs and views add to it with `bound(...)`; the
request's own fields are read from Flask's `g` when the line is written.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time

CONTEXT_KEYS = ("request_id", "workspace_id", "job_id", "batch_id")
_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("batchrouter_log_context",
                                                                       default=None)


@contextlib.contextmanager
def bound(**fields):
    """Add fields to every log line written inside the block (jobs: job_id, batch_id…)."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields) -> None:
    """Add fields for the rest of the current `bound` block (e.g. once a job knows its batch).

    Outside any block (a job function called directly) it does nothing: a field set there
    would stay on every later line of the thread."""
    current = _context.get()
    if current is not None:
        _context.set({**current, **{k: v for k, v in fields.items() if v}})


def _request_fields() -> dict:
    from flask import g, has_request_context

    if not has_request_context():
        return {}
    from batchrouter.extensions import request_id

    fields = {"request_id": request_id()}
    # Only what the request already loaded: a log line must never query the database.
    principal = g.get("principal")
    user = g.get("_login_user")
    workspace = getattr(principal, "workspace_id", None) or getattr(user, "workspace_id", None)
    if workspace:
        fields["workspace_id"] = workspace
    return fields


def current_fields() -> dict:
    try:
        fields = _request_fields()
    except Exception:  # noqa: BLE001 - logging must not fail because the request state is odd
        fields = {}
    fields.update(_context.get() or {})
    return fields


class ContextFilter(logging.Filter):
    """Copies the current context onto each record (handler-level, so it sees every logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current_fields().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    EXTRA = ("method", "path", "route", "status", "duration_ms")

    def format(self, record: logging.LogRecord) -> str:
        data = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}
        for key in CONTEXT_KEYS + self.EXTRA:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_KEYS
                           if getattr(record, k, None))
        return f"{line} [{context}]" if context else line


def configure(fmt: str) -> None:
    """Install one stderr handler on the root logger (idempotent across app instances)."""
    root = logging.getLogger()
    if any(getattr(h, "_batchrouter", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._batchrouter = True
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(logging.INFO)


_access = logging.getLogger("batchrouter.access")


def init_app(app) -> None:
    """One access line per request, with its context (gunicorn's access log is not needed)."""
    from flask import g, request

    def start():
        g._log_started = time.perf_counter()

    def log_request(response):
        started = g.pop("_log_started", None)
        duration = round((time.perf_counter() - started) * 1000, 2) if started else None
        rule = request.url_rule.rule if request.url_rule is not None else None
        _access.info("%s %s %s %sms", request.method, request.path, response.status_code,
                     duration, extra={"method": request.method, "path": request.path,
                                      "route": rule, "status": response.status_code,
                                      "duration_ms": duration})
        return response

    app.before_request_funcs.setdefault(None, []).insert(0, start)
    app.after_request(log_request)
