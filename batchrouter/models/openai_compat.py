"""Batches created through the OpenAI-compatible surface (SPEC §6).

A row per OpenAI-style batch. When the input passed validation the row shares its id with the
`batches` row that runs it and only adds what OpenAI's Batch object needs on top (endpoint,
completion window, the OpenAI-format output files, usage). When validation failed there is
no batch, no quote and no reservation: the row alone records the `failed` batch and its errors.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from batchrouter.db import Base, utcnow


class OpenAIBatch(Base):
    __tablename__ = "openai_batches"
    __table_args__ = (Index("ix_openai_batches_workspace_id_id", "workspace_id", "id"),
                      Index("ix_openai_batches_workspace_id_fingerprint", "workspace_id",
                            "fingerprint"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    # Set once the batch exists; same value as `id`.
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"),
                                                 unique=True)
    mode: Mapped[str] = mapped_column(String(8), default="live")
    # creating (the create request is still working) | failed (validation) | created
    state: Mapped[str] = mapped_column(String(12), default="creating")
    endpoint: Mapped[str] = mapped_column(String(40))
    completion_window: Mapped[str] = mapped_column(String(8))
    input_file_id: Mapped[str] = mapped_column(String(40))
    metadata_: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    model: Mapped[str | None] = mapped_column(String(80))  # when the file uses one model
    errors: Mapped[list | None] = mapped_column(JSON)
    # sha256 of the create request (workspace, body): a retried create finds the first batch.
    fingerprint: Mapped[str] = mapped_column(String(64))
    output_file_id: Mapped[str | None] = mapped_column(String(40))
    error_file_id: Mapped[str | None] = mapped_column(String(40))
    usage: Mapped[dict | None] = mapped_column(JSON)
    created_by_key_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    failed_at: Mapped[datetime | None] = mapped_column(DateTime)
    finalizing_at: Mapped[datetime | None] = mapped_column(DateTime)
