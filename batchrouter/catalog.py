"""Catalog: seeded from batchrouter/data/catalog.json, edited by operators, versioned (SPEC §4)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from batchrouter import money
from batchrouter.db import utcnow
from batchrouter.errors import NotFound, ValidationFailed
from batchrouter.models import CatalogModel, CatalogVersion, Offering, Provider

SEED_FILE = Path(__file__).resolve().parent / "data" / "catalog.json"
OPERATIONS = ("responses", "embeddings", "vision")
FEATURES = ("tools", "structured_output", "vision")
PPM = 1_000_000


@dataclass(frozen=True)
class Lane:
    """An offering frozen for routing: everything a quote needs, no ORM attached."""

    index: int
    offering_id: int
    provider: str
    model: str
    mode: str
    provider_model_id: str
    input_rate: int  # micro-dollars per million tokens
    output_rate: int
    discount_ppm: int
    trains_on_data: bool
    zdr: bool
    regions: tuple
    features: frozenset
    p50: int
    p90: int
    capacity: int
    quality: float
    health: float
    enabled: bool
    provider_enabled: bool
    breaker_open: bool
    position: int

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model}/{self.mode}"


def _rate(value: str) -> int:
    return money.parse(value)


def _ppm(value: str) -> int:
    return money.parse(value)  # a fraction with ≤ 6 decimals → parts per million


def load_document(path: Path = SEED_FILE) -> dict:
    return json.loads(Path(path).read_text())


def _validate(doc: dict) -> None:
    for key in ("providers", "models", "offerings", "prices_taken_at"):
        if key not in doc:
            raise ValidationFailed(f"catalog file lacks '{key}'", code="invalid_catalog")
    slugs = {p["slug"] for p in doc["providers"]}
    models = {m["slug"] for m in doc["models"]}
    for m in doc["models"]:
        bad = set(m["operations"]) - set(OPERATIONS)
        if bad:
            raise ValidationFailed(f"model {m['slug']}: unknown operations {sorted(bad)}",
                                   code="invalid_catalog")
    for o in doc["offerings"]:
        if o["provider"] not in slugs or o["model"] not in models or \
                o["mode"] not in ("batch", "sync"):
            raise ValidationFailed(f"offering {o['provider']}/{o['model']}/{o['mode']} refers "
                                   "to an unknown provider, model or mode",
                                   code="invalid_catalog")


def apply_document(session: Session, doc: dict, *, overwrite: bool) -> int:
    """Upsert providers, models and offerings; with overwrite=False existing rows are kept
    (so re-seeding never undoes an operator's edits). Returns rows written."""
    _validate(doc)
    written = 0
    for pos, p in enumerate(doc["providers"]):
        row = session.get(Provider, p["slug"])
        if row is None or overwrite:
            row = row or Provider(slug=p["slug"])
            row.name, row.adapter, row.base_url = p["name"], p["adapter"], p.get("base_url", "")
            row.credential_env = p.get("credential_env", "")
            row.base_url_env = p.get("base_url_env", "")
            row.regions = p.get("regions", ["global"])
            row.max_batch_items = p.get("max_batch_items", 0)
            row.max_batch_bytes = p.get("max_batch_bytes", 0)
            row.notes, row.position = p.get("notes", ""), pos
            row.enabled = p.get("enabled", True)
            session.add(row)
            written += 1
    for pos, m in enumerate(doc["models"]):
        row = session.get(CatalogModel, m["slug"])
        if row is None or overwrite:
            row = row or CatalogModel(slug=m["slug"])
            row.name, row.operations = m["name"], m["operations"]
            row.context_window, row.max_output_tokens = m["context_window"], m["max_output_tokens"]
            row.typical_output_tokens = m.get("typical_output_tokens", 0)
            row.family, row.position = m.get("family", "other"), pos
            session.add(row)
            written += 1
    session.flush()
    existing = {(o.provider_slug, o.model_slug, o.mode): o
                for o in session.scalars(select(Offering))}
    for pos, o in enumerate(doc["offerings"]):
        row = existing.get((o["provider"], o["model"], o["mode"]))
        if row is None or overwrite:
            row = row or Offering(provider_slug=o["provider"], model_slug=o["model"],
                                  mode=o["mode"])
            row.provider_model_id = o.get("provider_model_id", o["model"])
            row.input_micros_per_mtok = _rate(o["input_per_mtok"])
            row.output_micros_per_mtok = _rate(o["output_per_mtok"])
            row.batch_discount_ppm = _ppm(o.get("batch_discount", "0"))
            row.trains_on_data, row.zdr = o.get("trains_on_data", False), o.get("zdr", False)
            row.regions, row.features = o.get("regions", ["global"]), o.get("features", [])
            row.turnaround_p50_s, row.turnaround_p90_s = o["turnaround_p50_s"], o["turnaround_p90_s"]
            row.capacity_items = o.get("capacity_items", 0)
            row.quality_prior, row.health = o.get("quality_prior", 0.5), o.get("health", 1.0)
            row.enabled, row.position, row.updated_at = o.get("enabled", True), pos, utcnow()
            session.add(row)
            written += 1
    version = session.get(CatalogVersion, 1)
    if version is None:
        session.add(CatalogVersion(id=1, version=1, prices_taken_at=doc["prices_taken_at"],
                                   source=doc.get("source", "")))
    elif overwrite:
        bump_version(session, prices_taken_at=doc["prices_taken_at"])
    return written


def seed(session: Session) -> int:
    """Load the shipped catalog where rows are missing (idempotent)."""
    return apply_document(session, load_document(), overwrite=False)


def bump_version(session: Session, prices_taken_at: str | None = None) -> CatalogVersion:
    version = session.get(CatalogVersion, 1)
    version.version += 1
    version.pricing_updated_at = utcnow()
    if prices_taken_at:
        version.prices_taken_at = prices_taken_at
    return version


def export_document(session: Session) -> dict:
    """The catalog in the seed file's format (for `flask catalog export`)."""
    version = session.get(CatalogVersion, 1)
    providers = session.scalars(select(Provider).order_by(Provider.position)).all()
    models = session.scalars(select(CatalogModel).order_by(CatalogModel.position)).all()
    offerings = session.scalars(select(Offering).order_by(Offering.position)).all()
    return {
        "prices_taken_at": version.prices_taken_at if version else "",
        "currency": "usd", "source": version.source if version else "",
        "providers": [{"slug": p.slug, "name": p.name, "adapter": p.adapter,
                       "base_url": p.base_url, "credential_env": p.credential_env,
                       "base_url_env": p.base_url_env, "regions": p.regions,
                       "max_batch_items": p.max_batch_items,
                       "max_batch_bytes": p.max_batch_bytes, "notes": p.notes,
                       "enabled": p.enabled} for p in providers],
        "models": [{"slug": m.slug, "name": m.name, "operations": m.operations,
                    "context_window": m.context_window, "max_output_tokens": m.max_output_tokens,
                    "typical_output_tokens": m.typical_output_tokens, "family": m.family}
                   for m in models],
        "offerings": [offering_document(o) for o in offerings],
    }


def offering_document(o: Offering) -> dict:
    return {"provider": o.provider_slug, "model": o.model_slug, "mode": o.mode,
            "provider_model_id": o.provider_model_id,
            "input_per_mtok": money.to_wire(o.input_micros_per_mtok),
            "output_per_mtok": money.to_wire(o.output_micros_per_mtok),
            "batch_discount": money.to_wire(o.batch_discount_ppm),
            "trains_on_data": o.trains_on_data, "zdr": o.zdr, "regions": o.regions,
            "features": o.features, "turnaround_p50_s": o.turnaround_p50_s,
            "turnaround_p90_s": o.turnaround_p90_s, "capacity_items": o.capacity_items,
            "quality_prior": o.quality_prior, "health": o.health, "enabled": o.enabled}


# --- reading ------------------------------------------------------------------------------

def is_configured(provider: Provider, credentials: dict) -> bool:
    """Routable here: this installation has the provider's adapter, and its credential is set
    in the environment or the console (sandbox needs none). `credentials` holds the config
    keys plus `stored_providers`, the slugs with access saved in the console."""
    from batchrouter import providers

    if provider.adapter not in providers.ADAPTERS:
        return False
    if provider.slug in credentials.get("stored_providers", ()):
        return True  # access saved in the console
    if provider.adapter == "compatible":
        return bool(provider.base_url)  # e.g. a local Ollama needs no key
    return not provider.credential_env or bool(credentials.get(provider.credential_env))


def load_lanes(session: Session) -> list[Lane]:
    """Every offering as a frozen Lane, in catalog order (the routing engine's input)."""
    stmt = (select(Offering).options(selectinload(Offering.provider))
            .order_by(Offering.position, Offering.id))
    lanes = []
    for index, o in enumerate(session.scalars(stmt)):
        lanes.append(Lane(
            index=index, offering_id=o.id, provider=o.provider_slug, model=o.model_slug,
            mode=o.mode, provider_model_id=o.provider_model_id,
            input_rate=o.input_micros_per_mtok, output_rate=o.output_micros_per_mtok,
            discount_ppm=o.batch_discount_ppm if o.mode == "batch" else 0,
            trains_on_data=o.trains_on_data, zdr=o.zdr, regions=tuple(o.regions),
            features=frozenset(o.features), p50=o.turnaround_p50_s, p90=o.turnaround_p90_s,
            capacity=o.capacity_items, quality=o.quality_prior,
            health=min(o.health, o.provider.health), enabled=o.enabled,
            provider_enabled=o.provider.enabled, breaker_open=o.provider.breaker_open,
            position=index))
    return lanes


def models_by_slug(session: Session) -> dict[str, CatalogModel]:
    return {m.slug: m for m in session.scalars(select(CatalogModel))}


def list_models(session: Session, *, operation: str | None = None, provider: str | None = None,
                feature: str | None = None) -> list[CatalogModel]:
    """Models with their offerings, filtered as GET /v1/catalog/models allows."""
    stmt = (select(CatalogModel).options(selectinload(CatalogModel.offerings)
                                         .selectinload(Offering.provider))
            .order_by(CatalogModel.position))
    result = []
    for m in session.scalars(stmt):
        offerings = [o for o in m.offerings
                     if (provider is None or o.provider_slug == provider)
                     and (feature is None or feature in o.features)]
        if operation and operation not in m.operations:
            continue
        if (provider or feature) and not offerings:
            continue
        result.append(m)
    return result


def list_providers(session: Session) -> list[Provider]:
    return list(session.scalars(select(Provider).order_by(Provider.position)))


def get_offering(session: Session, offering_id: int) -> Offering:
    offering = session.get(Offering, offering_id)
    if offering is None:
        raise NotFound("No such offering.")
    return offering


def update_offering(session: Session, offering_id: int, *, input_per_mtok: str,
                    output_per_mtok: str, batch_discount: str, enabled: bool) -> Offering:
    """An operator's price edit; bumps the catalog version (pricing_updated_at)."""
    offering = get_offering(session, offering_id)
    try:
        offering.input_micros_per_mtok = _rate(input_per_mtok)
        offering.output_micros_per_mtok = _rate(output_per_mtok)
        discount = _ppm(batch_discount)
    except money.MoneyFormatError as exc:
        raise ValidationFailed(str(exc), code="invalid_price") from exc
    if discount >= PPM:
        raise ValidationFailed("The batch discount must be below 1.", code="invalid_price")
    offering.batch_discount_ppm = discount if offering.mode == "batch" else 0
    offering.enabled, offering.updated_at = enabled, utcnow()
    bump_version(session)
    return offering


def set_provider_enabled(session: Session, slug: str, enabled: bool) -> Provider:
    provider = session.get(Provider, slug)
    if provider is None:
        raise NotFound("No such provider.")
    provider.enabled = enabled
    bump_version(session)
    return provider


def version(session: Session) -> CatalogVersion | None:
    return session.get(CatalogVersion, 1)
