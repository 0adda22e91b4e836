"""BatchRouter: the application factory (defaults → environment → extensions → blueprints)."""
from __future__ import annotations

import logging

from flask import Flask
from sqlalchemy import event
from werkzeug.middleware.proxy_fix import ProxyFix

from batchrouter import config as config_module
from batchrouter.config import ROOT


def _load_config(app: Flask, overrides: dict | None) -> None:
    defaults = {k: getattr(config_module.Defaults, k) for k in config_module.ENV_KEYS}
    app.config.update(defaults)
    app.config.update(config_module.from_environment())
    app.config.update(overrides or {})
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = config_module.load_secret_key()
    base_https = app.config["BASE_URL"].startswith("https://")
    app.config.update(
        MAX_CONTENT_LENGTH=app.config["BATCHROUTER_MAX_CONTENT_LENGTH"],
        SESSION_COOKIE_NAME="__Host-br_session" if base_https else "br_session",
        SESSION_COOKIE_SECURE=base_https,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=app.config["BATCHROUTER_SESSION_ABSOLUTE_TTL"],
        # The cookie's lifetime is the absolute TTL: re-signing it on every request would not
        # extend anything (the server-side record enforces both TTLs), only cost CPU per page.
        SESSION_REFRESH_EACH_REQUEST=False,
        WTF_CSRF_CHECK_DEFAULT=False,  # checked in security.enforce_csrf (cookie sessions only)
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session (no lost forms)
        WTF_CSRF_SSL_STRICT=base_https,
        RATELIMIT_STORAGE_URI=_limits_storage(app.config),
        RATELIMIT_KEY_PREFIX=app.config.get("RATELIMIT_KEY_PREFIX", "br"),
        RATELIMIT_HEADERS_ENABLED=True,
    )


def _limits_storage(cfg) -> str:
    """Flask-Limiter storage: shared Redis, so limits hold across processes and machines."""
    url = cfg["BATCHROUTER_RATELIMIT_STORAGE_URI"] or cfg["REDIS_URL"] or "memory://"
    # The `limits` library spells unix sockets redis+unix://.
    return "redis+unix://" + url[len("unix://"):] if url.startswith("unix://") else url


def _drain_after_commit(app: Flask) -> None:
    """Hand outbox rows to Redis right after the transaction that wrote them commits."""
    from batchrouter import queue

    runtime = app.extensions["batchrouter"]

    @event.listens_for(runtime.db.sessionmaker, "after_commit")
    def _after_commit(session):
        if session.in_nested_transaction():
            # SQLAlchemy also fires after_commit when a SAVEPOINT is released (email.queue_email
            # uses one): the outer transaction still holds its rows and the write lock, so
            # draining now would wait on our own lock and find nothing committed.
            return
        ids = session.info.pop("outbox_ids", None)
        if ids and runtime.redis_url:
            try:
                queue.drain_outbox(runtime.db, runtime.redis, ids=ids,
                                   lease=app.config["BATCHROUTER_OUTBOX_LEASE"])
            except Exception:
                logging.getLogger(__name__).warning("outbox fast-path drain failed",
                                                    exc_info=True)

    @event.listens_for(runtime.db.sessionmaker, "after_rollback")
    def _after_rollback(session):
        session.info.pop("outbox_ids", None)


def create_app(config: dict | None = None) -> Flask:
    """Build the app; nothing is read, connected or registered before this is called."""
    app = Flask(__name__, template_folder=str(ROOT / "templates"),
                static_folder=str(ROOT / "static"))
    _load_config(app, config)
    proxies = int(app.config.get("BATCHROUTER_TRUSTED_PROXIES", 0) or 0)
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)

    from batchrouter import extensions, logs, security
    from batchrouter.api import register_api
    from batchrouter.web import register_web

    logs.configure(app.config["LOG_FORMAT"])
    logs.init_app(app)
    app.extensions["batchrouter"] = extensions.Runtime(app.config)
    _drain_after_commit(app)
    app.teardown_appcontext(extensions.close_db_session)
    extensions.csrf.init_app(app)
    extensions.limiter.init_app(app)
    security.init_app(app)
    register_api(app)
    register_web(app)
    extensions.drop_idle_limiter_hook(app)  # after every blueprint declared its limits
    from batchrouter.cli import register_cli
    register_cli(app)
    return app


__all__ = ["create_app"]
