"""Idempotency-Key records for POST endpoints (SPEC §6): same key + same body replays the first
response; a different body is a 409 conflict; a request still running is a 409 too."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from batchrouter.errors import Conflict, ValidationFailed
from batchrouter.models import IdempotencyRecord


@dataclass
class Replay:
    status: int
    body: str
    headers: dict


def request_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


def begin(session: Session, workspace_id: str, key: str, method: str, path: str,
          body: bytes) -> IdempotencyRecord | Replay:
    """Claim `key` for this request, or return the stored response to replay."""
    if not key or len(key) > 255:
        raise ValidationFailed("Idempotency-Key must be 1–255 characters.",
                               code="invalid_idempotency_key")
    digest = request_hash(method, path, body)
    record = IdempotencyRecord(workspace_id=workspace_id, key=key, method=method, path=path,
                               request_hash=digest)
    try:
        with session.begin_nested():
            session.add(record)
        session.commit()
        return record
    except IntegrityError:
        session.rollback()
    existing = session.scalars(select(IdempotencyRecord).where(
        IdempotencyRecord.workspace_id == workspace_id, IdempotencyRecord.key == key)).one()
    if existing.request_hash != digest:
        raise Conflict("This Idempotency-Key was used with a different request.",
                       code="idempotency_conflict")
    if existing.status is None:
        raise Conflict("A request with this Idempotency-Key is still in progress.",
                       code="idempotency_in_progress", headers={"Retry-After": "1"})
    return Replay(existing.status, existing.response_body or "", existing.response_headers or {})


def complete(session: Session, record_id: int, status: int, body: str, headers: dict) -> None:
    """Store the response; a 5xx frees the key instead so the client can retry."""
    record = session.get(IdempotencyRecord, record_id)
    if record is None:
        return
    if status >= 500:
        session.delete(record)
    else:
        record.status, record.response_body, record.response_headers = status, body, headers
    session.commit()


def purge_older_than(session: Session, cutoff) -> int:
    return session.execute(delete(IdempotencyRecord)
                           .where(IdempotencyRecord.created_at < cutoff)).rowcount or 0
