"""Who is calling the API: a Bearer key or a console session, with scopes and rate limits."""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

from flask import current_app, g
from flask_login import current_user
from limits import parse

from batchrouter import apikeys
from batchrouter.errors import Forbidden, RateLimited, Unauthorized
from batchrouter.extensions import commit_bookkeeping, db_session, limiter
from batchrouter.models import ApiKey
from batchrouter.security import bearer_token


@dataclass
class Principal:
    user_id: str | None
    workspace_id: str
    role: str
    mode: str = "live"
    key: ApiKey | None = None
    scopes: set = field(default_factory=set)

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key else None


def _check_rate(limit: str, *identifiers: str) -> None:
    item = parse(limit)
    if not limiter.limiter.hit(item, *identifiers):
        reset = limiter.limiter.get_window_stats(item, *identifiers).reset_time
        retry = max(1, int(reset - time.time()) + 1)
        raise RateLimited("Rate limit exceeded; retry after the Retry-After delay.",
                          headers={"Retry-After": str(retry)})


def _from_key(secret: str) -> Principal:
    session = db_session()
    key, role = apikeys.authenticate_with_role(session, secret)
    if session.dirty:  # last_used_at moved (once a minute): persist it before the view runs
        commit_bookkeeping(session)
    cfg = current_app.config
    _check_rate(cfg["BATCHROUTER_API_LIMIT_KEY"], "api-key", key.id)
    _check_rate(cfg["BATCHROUTER_API_LIMIT_WORKSPACE"], "api-workspace", key.workspace_id)
    return Principal(user_id=key.created_by_id, workspace_id=key.workspace_id, role=role,
                     mode=key.mode, key=key,
                     scopes=set(key.scopes) & apikeys.allowed_scopes(role))


def _from_session() -> Principal | None:
    if not current_user.is_authenticated or not current_user.workspace_id:
        return None
    _check_rate(current_app.config["BATCHROUTER_API_LIMIT_WORKSPACE"], "api-workspace",
                current_user.workspace_id)
    return Principal(user_id=current_user.id, workspace_id=current_user.workspace_id,
                     role=current_user.role, scopes=apikeys.allowed_scopes(current_user.role))


def current_principal() -> Principal:
    """Authenticate once per request; Unauthorized when neither a key nor a session is given."""
    if "principal" not in g:
        secret = bearer_token()
        principal = _from_key(secret) if secret else _from_session()
        if principal is None:
            raise Unauthorized("Send an API key as 'Authorization: Bearer br_…'.",
                               code="missing_api_key")
        g.principal = principal
    return g.principal


def require(scope: str):
    """View decorator: the caller must be authenticated and hold `scope`."""
    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            principal = current_principal()
            if scope not in principal.scopes:
                raise Forbidden(f"This credential lacks the '{scope}' scope.",
                                code="insufficient_scope")
            return view(*args, **kwargs)
        return wrapped
    return decorator
