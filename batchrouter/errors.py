"""Domain exceptions, each with a stable code and HTTP status mapped in one place (api/errors.py)."""
from __future__ import annotations


class DomainError(Exception):
    """Base class: `code` is the stable wire code, `status` the HTTP status."""

    code = "invalid_request"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 details: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.details = details
        self.headers = headers or {}


class InvalidRequest(DomainError):
    code, status = "invalid_request", 400


class ValidationFailed(DomainError):
    code, status = "validation_failed", 422


class Unauthorized(DomainError):
    code, status = "unauthorized", 401


class Forbidden(DomainError):
    code, status = "forbidden", 403


class NotFound(DomainError):
    code, status = "not_found", 404


class Conflict(DomainError):
    code, status = "conflict", 409


class InsufficientCredits(DomainError):
    code, status = "insufficient_credits", 402


class RateLimited(DomainError):
    code, status = "rate_limited", 429
