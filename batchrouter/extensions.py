"""Flask extension objects and the per-request accessors views use (db session, redis, client)."""
from __future__ import annotations

import secrets

from flask import current_app, g, request
from flask_limiter import Limiter
from flask_login import LoginManager
from flask_wtf import CSRFProtect

from batchrouter import accounts, queue
from batchrouter.db import WRITE_INTENT, Database
from batchrouter.storage import make_storage


def client_ip() -> str:
    # ProxyFix (configured by BATCHROUTER_TRUSTED_PROXIES) has already rewritten remote_addr
    # when the app runs behind trusted proxies; a raw X-Forwarded-For is never trusted.
    return request.remote_addr or "unknown"


login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=client_ip, default_limits=[], headers_enabled=True)


def drop_idle_limiter_hook(app) -> None:
    """Flask-Limiter runs a hook before every request for application, default, blueprint and
    meta limits. BatchRouter sets none of those: its limits are decorators on the views that
    need them (which check themselves, hook or not) and the API's own `limiter.limiter.hit`
    calls. While that stays so, the hook only costs every request (~5 % of a progress poll)
    and is removed; configuring such a limit (e.g. RATELIMIT_DEFAULT) keeps it."""
    try:
        manager = limiter.limit_manager
        busy = (manager.application_limits or manager.default_limits
                or any(manager._blueprint_limits.values()) or limiter._meta_limits)
    except AttributeError:  # another Flask-Limiter: keep its hook
        return
    if not busy:
        app.before_request_funcs[None].remove(limiter._check_request_limit)


class Runtime:
    """What the app holds for its lifetime: the database and how to reach Redis."""

    def __init__(self, config: dict):
        self.db = Database(config["DATABASE_URL"])
        self.redis_url = config["REDIS_URL"]
        self.secret = config["SECRET_KEY"]
        self.storage = make_storage(config)

    @property
    def redis(self):
        return queue.connect(self.redis_url)


def runtime() -> Runtime:
    return current_app.extensions["batchrouter"]


def db_session():
    """The request's SQLAlchemy session, opened on first use and closed at teardown."""
    if "db_session" not in g:
        g.write_intent = WRITE_INTENT.set(request.method not in ("GET", "HEAD", "OPTIONS"))
        g.db_session = runtime().db.sessionmaker()
    return g.db_session


def commit_bookkeeping(session) -> None:
    """Commit a best-effort write (last-seen times) made while reading; if SQLite refuses it
    because a worker committed meanwhile, drop it rather than fail the page."""
    from sqlalchemy.exc import OperationalError

    try:
        session.commit()
    except OperationalError:
        session.rollback()


def close_db_session(_exc=None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
    token = g.pop("write_intent", None)
    if token is not None:
        WRITE_INTENT.reset(token)


def account_settings() -> accounts.Settings:
    cfg = current_app.config
    return accounts.Settings(secret=cfg["SECRET_KEY"], base_url=cfg["BASE_URL"].rstrip("/"),
                             starter_credits=cfg["BATCHROUTER_STARTER_CREDITS"],
                             verify_ttl=cfg["BATCHROUTER_VERIFY_TOKEN_TTL"],
                             reset_ttl=cfg["BATCHROUTER_RESET_TOKEN_TTL"])


def quote_settings():
    """Quote settings from config: provider credentials, fee, manifest limits, lock TTL."""
    from batchrouter import provider_config, quotes

    cfg = current_app.config
    return quotes.Settings(
        credentials={**{k: cfg.get(k) for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY",
                                                "OPENROUTER_API_KEY")},
                     "stored_providers": provider_config.configured_slugs(db_session())},
        fee_ppm=cfg["BATCHROUTER_SERVICE_FEE_PPM"], ttl=cfg["BATCHROUTER_QUOTE_TTL"],
        limits=manifest_limits())


def manifest_limits():
    from batchrouter import manifest

    cfg = current_app.config
    return manifest.Limits(max_items=cfg["BATCHROUTER_MAX_ITEMS"],
                           max_bytes=cfg["BATCHROUTER_MAX_MANIFEST_BYTES"],
                           max_line_bytes=cfg["BATCHROUTER_MAX_ITEM_BYTES"])


def client() -> accounts.Client:
    return accounts.Client(ip=client_ip(), user_agent=request.headers.get("User-Agent"))


def request_id() -> str:
    if "request_id" not in g:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if 8 <= len(incoming) <= 64 and incoming.isalnum() \
            else secrets.token_hex(8)
    return g.request_id
