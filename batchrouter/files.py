"""Manifest files: store the bytes, preflight them, keep the report (SPEC §3, §6)."""
from __future__ import annotations

from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from batchrouter import manifest
from batchrouter.db import iso, utcnow
from batchrouter.errors import NotFound, ValidationFailed
from batchrouter.ids import new_id
from batchrouter.models import File
from batchrouter.storage import FilesystemStorage

PURPOSES = ("batch",)


def store_manifest(session: Session, storage: FilesystemStorage, *, workspace_id: str,
                   mode: str, stream: BinaryIO, filename: str, purpose: str,
                   models: dict, limits: manifest.Limits, declared_count: int | None = None,
                   declared_sha256: str | None = None) -> tuple[File, manifest.Report]:
    """Write the upload to storage while preflighting it line by line (bounded memory).

    Beside the file go the item summaries the preflight produced, so quoting the file later
    needs no second scan."""
    if purpose not in PURPOSES:
        raise ValidationFailed("purpose must be 'batch'.", code="invalid_purpose")
    file_id = new_id("file")
    key = f"manifests/{workspace_id}/{file_id}.jsonl"
    with storage.open_write(summaries_key(key)) as summaries:
        checker = manifest.Preflight(
            models, limits, keep_items=False, hash_lines=False,
            sink=lambda batch: manifest.write_summary_frame(summaries, batch))
        with manifest.gc_paused():
            _size, digest = storage.write_chunks(key, _checked_chunks(stream, checker, limits))
        report = checker.finish(declared_count=declared_count, declared_sha256=declared_sha256,
                                digest=digest)
    if not report.ok:
        storage.delete(summaries_key(key))
    record = File(id=file_id, workspace_id=workspace_id, mode=mode, purpose=purpose,
                  filename=(filename or "manifest.jsonl")[:255], storage_key=key,
                  bytes=report.bytes, sha256=report.sha256, item_count=report.item_count,
                  status="processed" if report.ok else "error",
                  preflight_error_count=report.error_count,
                  preflight_errors=[p.to_json() for p in report.errors[:100]])
    session.add(record)
    session.flush()
    return record, report


def _checked_chunks(stream: BinaryIO, checker: manifest.Preflight, limits: manifest.Limits):
    """Chunks go to storage as read; their lines go through preflight on the way."""
    pending: list[bytes] = []

    def chunks():
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            pending.append(chunk)
            yield chunk

    for line in manifest.split_lines(chunks()):
        checker.feed(line)
        while pending:
            yield pending.pop(0)
        if checker.bytes > limits.max_bytes:
            return  # stop reading: the report says manifest_too_large
    yield from pending


def summaries_key(key: str) -> str:
    """Where the item summaries of a stored manifest live (what a quote needs of each item)."""
    return key + ".items"


def load_summaries(storage: FilesystemStorage, record: File) -> list:
    """The item summaries written at upload, so quoting a file needs no second scan."""
    with storage.open(summaries_key(record.storage_key)) as fh:
        return manifest.read_summaries(fh)


def get_file(session: Session, workspace_id: str, file_id: str) -> File:
    record = session.get(File, file_id) if isinstance(file_id, str) else None
    if record is None or record.workspace_id != workspace_id or record.deleted_at is not None:
        raise NotFound(f"No file {str(file_id)[:60]!r} in this workspace.", code="file_not_found")
    return record


def to_json(record: File) -> dict:
    return {"id": record.id, "object": "file", "purpose": record.purpose,
            "filename": record.filename, "bytes": record.bytes, "sha256": record.sha256,
            "item_count": record.item_count, "status": record.status, "mode": record.mode,
            "created_at": iso(record.created_at),
            "preflight": {"ok": record.preflight_error_count == 0,
                          "error_count": record.preflight_error_count,
                          "errors": record.preflight_errors}}


def list_files(session: Session, workspace_id: str, *, purposes: tuple[str, ...],
               after: str | None = None, order: str = "desc", limit: int = 100) -> list[File]:
    """Live (not deleted) files of a workspace, keyset-paged by id (ids sort by creation)."""
    stmt = select(File).where(File.workspace_id == workspace_id, File.deleted_at.is_(None),
                              File.purpose.in_(purposes))
    if after:
        stmt = stmt.where(File.id < after if order == "desc" else File.id > after)
    column = File.id.desc() if order == "desc" else File.id.asc()
    return list(session.scalars(stmt.order_by(column).limit(limit)))


def delete_file(session: Session, storage: FilesystemStorage, record: File) -> None:
    """Forget a file: the row is kept (batches refer to it) but hidden, the bytes removed.

    Batches already created from it are not affected: items carry their own lines."""
    record.deleted_at = utcnow()
    storage.delete(record.storage_key)
    if record.purpose == "batch":
        storage.delete(summaries_key(record.storage_key))
