"""Cross-cutting web security: CSRF for cookie sessions, security headers, request ids."""
from __future__ import annotations

from flask import Flask, g, request

from batchrouter.extensions import csrf, request_id

# Paths that authenticate by signature, never by cookie (SPEC §6).
CSRF_EXEMPT_PREFIXES = ("/webhooks/",)
API_PREFIXES = ("/v1/", "/openai/v1/")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES) or path in ("/v1", "/openai/v1")


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


def _has_session_cookie() -> bool:
    from flask import current_app

    return current_app.config["SESSION_COOKIE_NAME"] in request.cookies


def enforce_csrf() -> None:
    """CSRF applies to cookie-authenticated requests only (Bearer calls carry no cookie)."""
    if request.method in ("GET", "HEAD", "OPTIONS", "TRACE"):
        return
    if request.path.startswith(CSRF_EXEMPT_PREFIXES):
        return
    if is_api_path(request.path) and (bearer_token() or not _has_session_cookie()):
        return  # no cookie → nothing to forge; authentication answers 401 instead
    # Fetch Metadata: a browser telling us the POST comes from another site is refused at once.
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        from flask_wtf.csrf import CSRFError
        raise CSRFError("Cross-site request refused.")
    csrf.protect()


def add_security_headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    response.headers["X-Request-Id"] = request_id()
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    if getattr(g, "no_store", False) or is_api_path(request.path):
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    app.before_request(enforce_csrf)
    app.after_request(add_security_headers)
