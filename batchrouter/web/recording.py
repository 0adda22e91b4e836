"""Request hooks that keep the records of SPEC §10: one API event per API call and one
rate-limit hit per 429, buffered in Redis (see apievents.py)."""
from __future__ import annotations

import time

from flask import g, request

from batchrouter import apievents
from batchrouter.db import utcnow
from batchrouter.extensions import client_ip, request_id, runtime
from batchrouter.security import is_api_path


def _start() -> None:
    g.started_at = time.perf_counter()


def _record(response):
    api = is_api_path(request.path)
    if not api and response.status_code != 429:
        return response
    rt = runtime()
    if not rt.redis_url:
        return response
    principal = g.get("principal")
    common = {"method": request.method, "path": request.path[:300],
              "key_id": principal.key_id if principal else None,
              "workspace_id": principal.workspace_id if principal else None,
              "created_at": utcnow().isoformat()}
    redis = rt.redis
    if api:
        latency = int((time.perf_counter() - g.get("started_at", time.perf_counter())) * 1000)
        apievents.buffer(redis, {"kind": "api", "status": response.status_code,
                                 "latency_ms": latency, "request_id": request_id(), **common})
    if response.status_code == 429:
        apievents.buffer(redis, {"kind": "rate_limit", "ip": client_ip(), **common})
    return response


def init_app(app) -> None:
    app.before_request(_start)
    app.after_request(_record)
