"""The OpenAI-format output and error files of a batch created through the OpenAI surface
(SPEC §6), written by the finalizer beside the native artifacts, in manifest order."""
from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from batchrouter import openai_format
from batchrouter.finalize import PAGE, _artifact, _file_row, _write
from batchrouter.models import Batch, Item, OpenAIBatch
from batchrouter.storage import FilesystemStorage


def write_openai_artifacts(session: Session, storage: FilesystemStorage, batch: Batch,
                           finalizing_at: datetime) -> None:
    """No-op for batches not created through the OpenAI surface.

    `finalizing_at` is the finalizer's own clock reading, the same one it stamps as the batch's
    finish time, so finalizing_at <= completed_at holds as clients expect."""
    row = session.scalars(select(OpenAIBatch).where(OpenAIBatch.batch_id == batch.id)).first()
    if row is None or row.output_file_id or row.error_file_id:
        return
    row.finalizing_at = finalizing_at
    output = _artifact(storage, batch, "openai_output")
    errors = _artifact(storage, batch, "openai_errors")
    tokens_in = tokens_out = 0
    with storage.open_write(output["key"]) as out_ok, storage.open_write(errors["key"]) as out_err:
        last = -1
        while True:
            items = session.scalars(select(Item).where(Item.batch_id == batch.id,
                                                       Item.seq > last)
                                    .order_by(Item.seq).limit(PAGE)).all()
            if not items:
                break
            last = items[-1].seq
            for item in items:
                if item.status == "succeeded":
                    line = openai_format.output_line(row.endpoint, item, json.loads(item.result))
                    _write(output, out_ok, _encode(line))
                    tokens_in += item.input_tokens
                    tokens_out += item.output_tokens
                else:
                    _write(errors, out_err, _encode(openai_format.error_line(item)))
    # OpenAI leaves a file id empty when no line went to that file.
    row.output_file_id = _keep(session, storage, batch, output)
    row.error_file_id = _keep(session, storage, batch, errors)
    row.usage = {"input_tokens": tokens_in, "output_tokens": tokens_out}


def _encode(line: dict) -> bytes:
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def _keep(session: Session, storage: FilesystemStorage, batch: Batch, artifact: dict) -> str | None:
    if not artifact["lines"]:
        storage.delete(artifact["key"])
        return None
    return _file_row(session, batch, artifact, artifact["kind"])
