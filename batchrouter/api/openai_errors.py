"""OpenAI's error envelope for everything under /openai/ (SPEC §6): `{"error": {message, type,
param, code}}`, with `x-should-retry` telling the official SDKs whether a retry can help."""
from __future__ import annotations

from flask import jsonify

PREFIX = "/openai/"
TYPES = {401: "authentication_error", 402: "insufficient_quota", 403: "permission_error",
         429: "rate_limit_error"}
# Statuses a retry can cure; every other 4xx is deterministic and the SDK must not retry it.
TRANSIENT = (408, 429)


def error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return TYPES.get(status, "invalid_request_error")


def openai_error_json(status: int, code: str, message: str, details=None, headers=None,
                      **_extra):
    """The response for an error on the OpenAI surface (same inputs as api.errors.error_json)."""
    details = details if isinstance(details, dict) else {}
    body = {"error": {"message": message, "type": error_type(status),
                      "param": details.get("param") or details.get("field"), "code": code}}
    if "error_reference" in _extra:
        body["error"]["error_reference"] = _extra["error_reference"]
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    if 400 <= status < 500 and status not in TRANSIENT:
        response.headers.setdefault("x-should-retry", "false")
    return response
