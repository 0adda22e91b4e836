"""The `@idempotent` decorator every POST create endpoint uses (SPEC §6)."""
from __future__ import annotations

import functools

from flask import make_response, request

from batchrouter import idempotency
from batchrouter.api.auth import current_principal
from batchrouter.extensions import db_session

REPLAY_HEADERS = ("Content-Type", "Location")


def idempotent(view):
    """Replay the first response for a repeated Idempotency-Key with the same body."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if not key:
            return view(*args, **kwargs)
        principal = current_principal()
        session = db_session()
        claimed = idempotency.begin(session, principal.workspace_id, key, request.method,
                                    request.path, request.get_data(cache=True))
        if isinstance(claimed, idempotency.Replay):
            response = make_response(claimed.body, claimed.status)
            response.headers.update(claimed.headers)
            response.headers["Idempotent-Replayed"] = "true"
            return response
        try:
            response = make_response(view(*args, **kwargs))
        except Exception:
            session.rollback()
            idempotency.complete(session, claimed.id, 500, "", {})
            raise
        headers = {h: response.headers[h] for h in REPLAY_HEADERS if h in response.headers}
        idempotency.complete(session, claimed.id, response.status_code,
                             response.get_data(as_text=True), headers)
        return response
    return wrapped
