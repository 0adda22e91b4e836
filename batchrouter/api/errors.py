"""Errors to HTTP in one place: the JSON envelope of SPEC §6 for the API, pages for the console."""
from __future__ import annotations

import logging
import traceback

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from batchrouter.api.openai_errors import PREFIX as OPENAI_PREFIX
from batchrouter.api.openai_errors import openai_error_json
from batchrouter.errors import DomainError
from batchrouter.extensions import request_id, runtime
from batchrouter.models import ErrorReport
from batchrouter.security import is_api_path

log = logging.getLogger(__name__)

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
              415: "unsupported_media_type", 422: "validation_failed", 429: "rate_limited"}


def error_json(status: int, code: str, message: str, details=None, headers=None, **extra):
    if request.path.startswith(OPENAI_PREFIX):  # that surface speaks OpenAI's envelope
        return openai_error_json(status, code, message, details, headers, **extra)
    body = {"error": {"code": code, "message": message, **extra}}
    if details is not None:
        body["error"]["details"] = details
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _wants_json() -> bool:
    return is_api_path(request.path) or request.path.startswith("/webhooks/")


def _page(status: int, title: str, message: str, reference: str | None = None):
    return render_template("errors/error.html", status=status, title=title, message=message,
                           reference=reference, request_id=request_id()), status


def handle_domain_error(exc: DomainError):
    if _wants_json():
        return error_json(exc.status, exc.code, exc.message, exc.details, exc.headers)
    return _page(exc.status, "Something is not right", exc.message)


def handle_csrf_error(exc: CSRFError):
    message = ("The form expired or did not come from this site. Reload the page and try "
               "again; nothing was changed.")
    if _wants_json():
        return error_json(400, "csrf_failed", message)
    return _page(400, "Please try again", message)


def handle_http_error(exc: HTTPException):
    status = exc.code or 500
    if status >= 500:
        return handle_unexpected(exc)
    if _wants_json():
        # Keep the headers HTTP gives these statuses meaning with (Allow on 405, Retry-After).
        original = exc.get_response().headers
        headers = {h: original[h] for h in ("Allow", "Retry-After") if h in original}
        if exc.response is not None and "Retry-After" in exc.response.headers:
            headers["Retry-After"] = exc.response.headers["Retry-After"]
        message = exc.description if status != 404 else "No such endpoint or object."
        if status == 429:
            message = "Too many requests; slow down and retry after the Retry-After delay."
        return error_json(status, HTTP_CODES.get(status, "http_error"), message, headers=headers)
    titles = {404: "Page not found", 405: "Not allowed", 413: "Too large",
              429: "Too many requests"}
    message = {404: "There is nothing at this address.",
               429: "Too many attempts. Wait a few minutes and try again."}.get(
        status, exc.description)
    return _page(status, titles.get(status, "Request problem"), message)


def _who() -> tuple[str | None, str | None]:
    """User and workspace of the failing request, without touching the database again."""
    from flask import g

    try:
        principal = g.get("principal")
        if principal is not None:
            return principal.user_id, principal.workspace_id
        user = g.get("_login_user")
        if user is not None and getattr(user, "is_authenticated", False):
            return user.id, user.workspace_id
    except Exception:  # noqa: BLE001, S110 - the session may be what failed; the report matters
        pass
    return None, None


def _abandon_request_transaction() -> None:
    """Roll back the failed request's own transaction first: on SQLite it may hold the write
    lock, and the report's separate session would wait out busy_timeout behind it."""
    from flask import g

    session = g.get("db_session")
    if session is None:
        return
    try:
        session.rollback()
    except Exception:
        log.warning("could not roll back the failed request's transaction", exc_info=True)


def record_error(exc: BaseException) -> str:
    """Store the traceback under a reference the user can quote to the operator."""
    user_id, workspace_id = _who()
    _abandon_request_transaction()
    try:
        with runtime().db.session() as session:
            report = ErrorReport(method=request.method, path=request.path[:500], status=500,
                                 exception=f"{type(exc).__name__}: {exc}"[:300],
                                 traceback="".join(traceback.format_exception(exc))[-20000:],
                                 request_id=request_id(), user_id=user_id,
                                 workspace_id=workspace_id)
            session.add(report)
            session.flush()
            return report.id
    except Exception:
        log.exception("could not record error report")
        return f"req-{request_id()}"


def handle_unexpected(exc: BaseException):
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    reference = record_error(exc)
    message = "Something went wrong on our side. Quote the reference to your operator."
    if _wants_json():
        return error_json(500, "internal_error", message, error_reference=reference)
    return _page(500, "Something went wrong", message, reference)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(CSRFError, handle_csrf_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected)
