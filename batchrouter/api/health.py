"""Liveness and readiness (SPEC §11)."""
from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from batchrouter import queue
from batchrouter.extensions import db_session, runtime

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is up."""
    return jsonify({"status": "ok"})


def _migrations_at_head(session) -> bool:
    from batchrouter.migrate import code_heads

    current = {row[0] for row in session.execute(text("SELECT version_num FROM alembic_version"))}
    return current == code_heads()


@bp.get("/readyz")
def readyz():
    """Ready when the database answers at the migration head, Redis answers and a worker lives."""
    checks = {}
    try:
        checks["database"] = "ok" if db_session().execute(text("SELECT 1")).scalar() == 1 else "fail"
        checks["migrations"] = "ok" if _migrations_at_head(db_session()) else "behind"
    except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
        checks.setdefault("database", f"fail: {type(exc).__name__}")
        checks.setdefault("migrations", "unknown")
    try:
        redis = runtime().redis
        redis.ping()
        checks["redis"] = "ok"
        checks["workers"] = len(queue.live_workers(redis))
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"fail: {type(exc).__name__}"
        checks["workers"] = 0
    ready = (checks["database"] == "ok" and checks["migrations"] == "ok"
             and checks["redis"] == "ok" and checks["workers"] > 0)
    return jsonify({"status": "ready" if ready else "not_ready", "checks": checks}), \
        200 if ready else 503
