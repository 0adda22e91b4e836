"""The `@idempotent` decorator every POST create endpoint uses (SPEC §6)."""
from __future__ import annotations

import functools
import json

from flask import make_response, request

from batchrouter import idempotency
from batchrouter.api.auth import current_principal
from batchrouter.extensions import db_session

REPLAY_HEADERS = ("Content-Type", "Location")


def _stored_body(response, redact: tuple[str, ...]) -> str:
    """The body kept for replays, with one-time secrets blanked (never stored in clear)."""
    body = response.get_data(as_text=True)
    if not redact or not response.is_json:
        return body
    data = json.loads(body)
    if isinstance(data, dict):
        for field in redact:
            if field in data:
                data[field] = None
    return json.dumps(data)


def idempotent(view=None, *, redact: tuple[str, ...] = ()):
    """Replay the first response for a repeated Idempotency-Key with the same body.

    Fields named in `redact` (a key's secret) come back as null on a replay: the secret was
    shown once, and storing it for replays would break "stored only as a hash".
    """
    if view is None:
        return functools.partial(idempotent, redact=redact)

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
                             _stored_body(response, redact), headers)
        return response
    return wrapped
