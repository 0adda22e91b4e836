"""The catalog (SPEC §4): providers, models and offerings (provider × model × mode).

Prices are integers: micro-dollars per million tokens; the batch discount is in parts per
million (500_000 = 50 %). Nothing here is a float except scores in [0, 1].
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from batchrouter.db import Base, utcnow


class Provider(Base):
    __tablename__ = "providers"

    slug: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    adapter: Mapped[str] = mapped_column(String(20))  # openai|anthropic|openrouter|compatible|sandbox
    base_url: Mapped[str] = mapped_column(String(300), default="")
    # Name of the config key holding the credential ("" = needs none, e.g. sandbox).
    credential_env: Mapped[str] = mapped_column(String(60), default="")
    base_url_env: Mapped[str] = mapped_column(String(60), default="")
    regions: Mapped[list] = mapped_column(JSON, default=list)
    max_batch_items: Mapped[int] = mapped_column(Integer, default=0)
    max_batch_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    health: Mapped[float] = mapped_column(Float, default=1.0)
    breaker_open: Mapped[bool] = mapped_column(Boolean, default=False)
    notes: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer, default=0)

    offerings: Mapped[list[Offering]] = relationship(back_populates="provider")


class CatalogModel(Base):
    __tablename__ = "catalog_models"

    slug: Mapped[str] = mapped_column(String(80), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    operations: Mapped[list] = mapped_column(JSON)
    context_window: Mapped[int] = mapped_column(Integer)
    max_output_tokens: Mapped[int] = mapped_column(Integer)
    typical_output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    family: Mapped[str] = mapped_column(String(40))
    position: Mapped[int] = mapped_column(Integer, default=0)

    offerings: Mapped[list[Offering]] = relationship(back_populates="model")


class Offering(Base):
    __tablename__ = "offerings"
    __table_args__ = (UniqueConstraint("provider_slug", "model_slug", "mode"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider_slug: Mapped[str] = mapped_column(ForeignKey("providers.slug", ondelete="CASCADE"))
    model_slug: Mapped[str] = mapped_column(ForeignKey("catalog_models.slug", ondelete="CASCADE"))
    mode: Mapped[str] = mapped_column(String(8))  # batch | sync
    provider_model_id: Mapped[str] = mapped_column(String(120))
    input_micros_per_mtok: Mapped[int] = mapped_column(BigInteger)
    output_micros_per_mtok: Mapped[int] = mapped_column(BigInteger)
    batch_discount_ppm: Mapped[int] = mapped_column(Integer, default=0)
    trains_on_data: Mapped[bool] = mapped_column(Boolean, default=False)
    zdr: Mapped[bool] = mapped_column(Boolean, default=False)
    regions: Mapped[list] = mapped_column(JSON, default=list)
    features: Mapped[list] = mapped_column(JSON, default=list)
    turnaround_p50_s: Mapped[int] = mapped_column(Integer)
    turnaround_p90_s: Mapped[int] = mapped_column(Integer)
    # Most items one batch may put on this lane (0 = no limit).
    capacity_items: Mapped[int] = mapped_column(Integer, default=0)
    quality_prior: Mapped[float] = mapped_column(Float, default=0.5)
    health: Mapped[float] = mapped_column(Float, default=1.0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    provider: Mapped[Provider] = relationship(back_populates="offerings")
    model: Mapped[CatalogModel] = relationship(back_populates="offerings")

    @property
    def lane(self) -> str:
        return f"{self.provider_slug}/{self.model_slug}/{self.mode}"


class CatalogVersion(Base):
    """One row: when prices last changed (`pricing_updated_at`) and from which source date."""

    __tablename__ = "catalog_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    prices_taken_at: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(Text, default="")
    pricing_updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
