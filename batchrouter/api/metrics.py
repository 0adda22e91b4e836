"""GET /metrics (Prometheus text) and the per-request HTTP metrics hooks (SPEC §11)."""
from __future__ import annotations

import hmac
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from flask_login import current_user

from batchrouter import metrics
from batchrouter.api.errors import error_json
from batchrouter.extensions import runtime
from batchrouter.security import bearer_token

bp = Blueprint("metrics", __name__)


def _start_timer() -> None:
    g._metrics_started = time.perf_counter()


def _record_request(response):
    started = g.pop("_metrics_started", None)
    rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
    seconds = time.perf_counter() - started if started is not None else 0.0
    metrics.http_request(request.method, rule, response.status_code, seconds)
    return response


def _authorized() -> bool:
    """The operator's metrics token, or a signed-in operator in the console."""
    expected = current_app.config.get("BATCHROUTER_METRICS_TOKEN")
    given = bearer_token()
    if expected and given:
        return hmac.compare_digest(given.encode(), str(expected).encode())
    return bool(getattr(current_user, "is_authenticated", False)
                and getattr(current_user, "is_operator", False))


def state_collector(app: Flask) -> metrics.StateCollector:
    return metrics.StateCollector(app.extensions["batchrouter"], app.config["BATCHROUTER_QUEUES"])


@bp.get("/metrics")
def scrape():
    """Prometheus exposition: process metrics plus state read from the database and Redis."""
    if not _authorized():
        return error_json(401, "unauthorized",
                          "Send the metrics token as 'Authorization: Bearer …' "
                          "(BATCHROUTER_METRICS_TOKEN), or scrape the internal metrics "
                          "address (BATCHROUTER_METRICS_BIND).",
                          headers={"WWW-Authenticate": 'Bearer realm="metrics"',
                                   "Cache-Control": "no-store"})
    runtime()  # the app's runtime must exist; the collector reads through it
    body = metrics.render(state_collector(current_app._get_current_object()))
    return Response(body, mimetype=None, content_type=metrics.CONTENT_TYPE,
                    headers={"Cache-Control": "no-store"})


def init_app(app: Flask) -> None:
    """Time every request from the first hook on; count it once the response is final."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)
    app.after_request(_record_request)
    app.register_blueprint(bp)
