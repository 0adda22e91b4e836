"""Signed, expiring download links for result files (SPEC §1 step 5, §6).

The token binds one file to one workspace under a purpose salt; the download checks both, so a
link cannot be replayed for another tenant's file or turned into another kind of token."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from batchrouter import tokens
from batchrouter.db import iso, utcnow
from batchrouter.errors import Forbidden
from batchrouter.models import File

PURPOSE = "artifact-download"


def sign_url(secret: str, base_url: str, record: File, ttl: int) -> dict:
    token = tokens.sign(secret, PURPOSE, {"f": record.id, "w": record.workspace_id})
    return {"url": f"{base_url}/v1/files/download/{token}",
            "expires_at": iso(utcnow() + timedelta(seconds=ttl)), "file_id": record.id,
            "bytes": record.bytes, "sha256": record.sha256}


def resolve(session: Session, secret: str, token: str, ttl: int) -> File:
    """The file a download token grants, or Forbidden (expired, tampered, other tenant)."""
    try:
        payload = tokens.unsign(secret, PURPOSE, token, ttl)
    except (tokens.TokenInvalid, tokens.TokenExpired) as exc:
        raise Forbidden(f"This download link is not valid: {exc.message}",
                        code="invalid_download_link") from exc
    record = session.get(File, payload.get("f"))
    if record is None or record.workspace_id != payload.get("w") or record.deleted_at:
        raise Forbidden("This download link is not valid for this file.",
                        code="invalid_download_link")
    return record
