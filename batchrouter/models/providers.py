"""Operator-set provider access: an encrypted key, a base URL and rate limits per provider."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from batchrouter.db import Base, utcnow


class ProviderCredential(Base):
    __tablename__ = "provider_credentials"

    provider_slug: Mapped[str] = mapped_column(
        ForeignKey("providers.slug", ondelete="CASCADE"), primary_key=True)
    # Fernet token under a key derived from SECRET_KEY; the key itself is never shown again.
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    key_last4: Mapped[str] = mapped_column(String(4), default="")
    base_url: Mapped[str] = mapped_column(String(300), default="")
    requests_per_minute: Mapped[int] = mapped_column(Integer, default=0)  # 0 = no limit
    tokens_per_minute: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(40))
