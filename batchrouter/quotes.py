"""Quotes: preflight + route + price lock, stored for the batch that accepts it (SPEC §4, §6)."""
from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import msgspec
from sqlalchemy.orm import Session

from batchrouter import catalog, files, ledger, manifest, money, pricing, routing, webhooks
from batchrouter.db import iso, utcnow
from batchrouter.errors import DomainError, InvalidRequest, NotFound, ValidationFailed
from batchrouter.models import Quote

QUOTE_TTL = 600


class QuoteRejected(DomainError):
    code, status = "quote_rejected", 422


@dataclass(frozen=True)
class Settings:
    credentials: dict  # config values: which providers have keys
    fee_ppm: int = pricing.DEFAULT_FEE_PPM
    limits: manifest.Limits = field(default_factory=manifest.Limits)
    ttl: int = QUOTE_TTL


# --- controls ----------------------------------------------------------------------------

def _choice(data: dict, key: str, allowed: tuple, default: str) -> str:
    value = data.get(key, default)
    if value not in allowed:
        raise ValidationFailed(f"{key} must be one of {', '.join(allowed)}.",
                               code="invalid_controls", details={"field": key})
    return value


def _str_list(value, key: str) -> tuple:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationFailed(f"{key} must be a list of strings.", code="invalid_controls",
                               details={"field": key})
    return tuple(value)


def parse_max_price(value) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("currency", "usd") != "usd" \
            or not isinstance(value.get("amount"), str):
        raise ValidationFailed('max_price must look like {"currency": "usd", "amount": "12.50"} '
                               "(a decimal string, never a float).",
                               code="invalid_controls", details={"field": "max_price"})
    try:
        return money.parse(value["amount"])
    except money.MoneyFormatError as exc:
        raise ValidationFailed(f"max_price.amount: {exc}", code="invalid_controls",
                               details={"field": "max_price"}) from exc


def _flag(prefs: dict, key: str, default: bool) -> bool:
    value = prefs.get(key, default)
    if not isinstance(value, bool):
        raise ValidationFailed(f"provider_preferences.{key} must be true or false.",
                               code="invalid_controls", details={"field": key})
    return value


def parse_controls(data: dict) -> routing.Controls:
    """Manifest-level controls from a request body, validated (SPEC §3)."""
    prefs = data.get("provider_preferences") or {}
    if not isinstance(prefs, dict):
        raise ValidationFailed("provider_preferences must be an object.",
                               code="invalid_controls")
    if prefs.get("data_collection", "allow") not in ("allow", "deny"):
        raise ValidationFailed("provider_preferences.data_collection must be allow or deny.",
                               code="invalid_controls")
    regions = _str_list(data.get("allowed_regions"), "allowed_regions") or ("global",)
    return routing.Controls(
        sla_tier=_choice(data, "sla_tier", tuple(routing.SLA_WINDOWS), "standard"),
        routing_mode=_choice(data, "routing_mode", routing.ROUTING_MODES, "cheapest"),
        privacy_tier=_choice(data, "privacy_tier", routing.PRIVACY_TIERS, "standard"),
        allowed_regions=regions,
        preferences=routing.Preferences(
            only=_str_list(prefs.get("only"), "provider_preferences.only"),
            ignore=_str_list(prefs.get("ignore"), "provider_preferences.ignore"),
            order=_str_list(prefs.get("order"), "provider_preferences.order"),
            allow_fallbacks=_flag(prefs, "allow_fallbacks", True),
            data_collection=prefs.get("data_collection", "allow"),
            zdr=_flag(prefs, "zdr", False)),
        max_price=parse_max_price(data.get("max_price")))


def controls_to_json(c: routing.Controls) -> dict:
    p = c.preferences
    return {"sla_tier": c.sla_tier, "routing_mode": c.routing_mode,
            "privacy_tier": c.privacy_tier, "allowed_regions": list(c.allowed_regions),
            "provider_preferences": {"only": list(p.only), "ignore": list(p.ignore),
                                     "order": list(p.order), "allow_fallbacks": p.allow_fallbacks,
                                     "data_collection": p.data_collection, "zdr": p.zdr},
            "max_price": None if c.max_price is None else
            {"currency": "usd", "amount": money.to_wire(c.max_price)}}


# --- context -------------------------------------------------------------------------------

def model_operations(session: Session) -> dict[str, tuple]:
    return {slug: tuple(m.operations) for slug, m in catalog.models_by_slug(session).items()}


def build_context(session: Session, settings: Settings, *, test_mode: bool) -> routing.Context:
    """Read the catalog once into the routing engine's plain inputs."""
    models = catalog.models_by_slug(session)
    configured = frozenset(p.slug for p in catalog.list_providers(session)
                           if catalog.is_configured(p, settings.credentials))
    sizing = {slug: pricing.ModelSizing(m.family, m.max_output_tokens, m.typical_output_tokens,
                                        m.operations == ["embeddings"])
              for slug, m in models.items()}
    from batchrouter import feedback

    return routing.Context(lanes=catalog.load_lanes(session), sizing=sizing,
                           model_operations={s: tuple(m.operations) for s, m in models.items()},
                           configured=configured, test_mode=test_mode, fee_ppm=settings.fee_ppm,
                           quality=feedback.quality_scores(session))


# --- quoting -------------------------------------------------------------------------------

def preflight(lines: Iterable[bytes], models: dict, limits: manifest.Limits) -> manifest.Report:
    """Preflight keeping item summaries; raises PreflightFailed when anything is wrong."""
    report = manifest.scan(lines, models, limits)
    if not report.ok:
        raise manifest.PreflightFailed(report)
    return report


def file_report(session: Session, storage, workspace_id: str, file_id) -> manifest.Report:
    """The preflight of an uploaded file: its stored report, and its item summaries."""
    record = files.get_file(session, workspace_id, file_id)
    if record.status != "processed":
        problems = [manifest.Problem(e["line"], e["code"], e["message"], e["customer_item_id"])
                    for e in record.preflight_errors]
        raise manifest.PreflightFailed(manifest.Report(
            record.item_count, record.bytes, record.sha256, problems,
            record.preflight_error_count))
    return manifest.Report(record.item_count, record.bytes, record.sha256, [], 0,
                           files.load_summaries(storage, record))


def load_manifest(session: Session, storage, settings: Settings, workspace_id: str,
                  data: dict) -> tuple[manifest.Report, str | None]:
    """The preflighted manifest of a quote or create request: inline `items` or an uploaded
    `input_file_id`. Raises PreflightFailed with line-level problems."""
    items, file_id = data.get("items"), data.get("input_file_id")
    if items is not None and file_id is not None:
        raise InvalidRequest("Send either items or input_file_id, not both.",
                             code="invalid_manifest")
    if items is not None:
        if not isinstance(items, list):
            raise InvalidRequest("items must be a list of item objects.",
                                 code="invalid_manifest")
        return preflight(manifest.encode_items(items), model_operations(session),
                         settings.limits), None
    if isinstance(file_id, str):
        return file_report(session, storage, workspace_id, file_id), file_id
    raise InvalidRequest("Send items (inline JSON) or input_file_id (an uploaded file).",
                         code="invalid_manifest")


def _lane_json(lane: catalog.Lane) -> dict:
    return {"index": lane.index, "lane": lane.name, "provider": lane.provider,
            "model": lane.model, "mode": lane.mode, "offering_id": lane.offering_id,
            "provider_model_id": lane.provider_model_id,
            "input_per_mtok": money.to_wire(lane.input_rate),
            "output_per_mtok": money.to_wire(lane.output_rate),
            "batch_discount": money.to_wire(lane.discount_ppm),
            "turnaround_p50_s": lane.p50, "turnaround_p90_s": lane.p90}


def _lanes_table(result: routing.Routing, ctx: routing.Context) -> list[dict]:
    """Every lane considered: its locked rates, how many items chose it, why others did not."""
    table = []
    for lane in ctx.lanes:
        stat = result.stats[lane.index]
        if not stat.selected and not stat.rejected:
            continue
        table.append(_lane_json(lane) | {
            "selected_items": stat.selected, "expected_cost": money.to_wire(stat.expected),
            "high_cost": money.to_wire(stat.high),
            "rejections": [{"code": code, "items": n, "reason": routing.REASONS[code]}
                           for code, n in sorted(stat.rejected.items())]})
    return table


def _plan(result: routing.Routing, ctx: routing.Context, max_items: dict) -> list[dict]:
    plan = []
    for lane in ctx.lanes:
        stat = result.stats[lane.index]
        if stat.selected:
            size = routing.unit_size(lane, max_items.get(lane.provider, 0))
            plan.append({"lane": lane.name, "items": stat.selected, "unit_size": size,
                         "work_units": -(-stat.selected // size)})
    return plan


def encode_selections(choices: list) -> bytes:
    """Per item [lane, low, expected, high, subtotal, fee, ladder], msgpack + zlib."""
    return zlib.compress(msgspec.msgpack.encode(choices), 1)


# Typed decode into tuples: several times cheaper than lists for 100k items, and the ladders
# come out hashable (create encodes each distinct ladder once).
_SELECTIONS = list[tuple[int, int, int, int, int, int, tuple[int, ...]]]


def decode_selections(blob: bytes) -> list[tuple]:
    return msgspec.msgpack.decode(zlib.decompress(blob), type=_SELECTIONS)


def _reject_unroutable(result: routing.Routing) -> None:
    sample = [{"customer_item_id": item.customer_item_id, "line": item.line,
               "lanes": [{"lane": name, "code": code, "reason": routing.REASONS[code]}
                         for name, code in reasons.items()]}
              for item, reasons in result.unroutable[:100]]
    raise QuoteRejected(f"{len(result.unroutable)} item(s) have no eligible lane.",
                        code="no_eligible_lane",
                        details={"unroutable_count": len(result.unroutable), "items": sample})


def _reject_over_max_price(controls: routing.Controls, result: routing.Routing) -> None:
    raise QuoteRejected(
        f"The high estimate {money.to_wire(result.high)} exceeds max_price "
        f"{money.to_wire(controls.max_price)}.", code="over_max_price",
        details={"max_price": money.to_wire(controls.max_price),
                 "high_total": money.to_wire(result.high),
                 "cheapest_high_total": money.to_wire(result.cheapest_high),
                 "cheapest_fits": result.cheapest_high <= controls.max_price})


def create_quote(session: Session, settings: Settings, *, workspace_id: str, mode: str,
                 report: manifest.Report, controls: routing.Controls,
                 input_file_id: str | None = None) -> Quote:
    """Route and price a preflighted manifest, and store the lock (reserves nothing)."""
    ctx = build_context(session, settings, test_mode=(mode == "test"))
    with manifest.gc_paused():
        result = routing.route(report.items, controls, ctx)
    if result.unroutable:
        _reject_unroutable(result)
    if controls.max_price is not None and result.high > controls.max_price:
        _reject_over_max_price(controls, result)
    covers = mode == "test" or ledger.balances(session, workspace_id).available >= result.high
    max_items = {p.slug: p.max_batch_items for p in catalog.list_providers(session)}
    version = catalog.version(session)
    now = utcnow()
    quote = Quote(
        workspace_id=workspace_id, mode=mode, manifest_sha256=report.sha256,
        input_file_id=input_file_id, item_count=report.item_count,
        controls=controls_to_json(controls), low_micros=result.low,
        expected_micros=result.expected, high_micros=result.high,
        provider_subtotal_micros=result.subtotal, fee_micros=result.fee,
        fee_ppm=ctx.fee_ppm, balance_covers=covers, lanes=_lanes_table(result, ctx),
        plan=_plan(result, ctx, max_items),
        assumptions=_assumptions(ctx, version, mode),
        selections=encode_selections(result.choices), created_at=now,
        expires_at=now + timedelta(seconds=settings.ttl))
    session.add(quote)
    session.flush()
    webhooks.quote_event(session, quote)
    return quote


def _assumptions(ctx: routing.Context, version, mode: str) -> dict:
    return {
        "input_tokens": "characters ÷ 4, corrected per model family "
                        f"({', '.join(f'{k} ×{v / 1000:g}' for k, v in pricing.FAMILY_CORRECTION.items())}), "
                        f"+{pricing.TOKENS_PER_MESSAGE} per message, "
                        f"+{pricing.TOKENS_PER_IMAGE} per image",
        "output_tokens": {"low": "10% of the output cap, at most the expected figure", "expected": "the model's typical "
                          "output, or half the cap", "high": "max_output_tokens, else the "
                          "model's max output"},
        "service_fee_rate": money.to_wire(ctx.fee_ppm),
        "batch_discount": "applied on batch lanes",
        "rounding": "per item, micro-dollars, half up",
        "settlement": "actual provider-reported usage at the locked rates, capped per item "
                      "at its high figure",
        "pricing_version": version.version if version else None,
        "pricing_updated_at": iso(version.pricing_updated_at) if version else None,
        "prices_taken_at": version.prices_taken_at if version else None,
        "test_mode": mode == "test",
    }


def get_quote(session: Session, workspace_id: str, quote_id: str) -> Quote:
    quote = session.get(Quote, quote_id) if isinstance(quote_id, str) else None
    if quote is None or quote.workspace_id != workspace_id:
        raise NotFound("No such quote.", code="quote_not_found")
    return quote


def to_json(quote: Quote, *, available: int | None = None) -> dict:
    selected = [lane for lane in quote.lanes if lane["selected_items"]]
    rejected = [{"lane": lane["lane"], "code": r["code"], "items": r["items"],
                 "reason": r["reason"]}
                for lane in quote.lanes for r in lane["rejections"]]
    body = {
        "id": quote.id, "object": "quote", "quote_id": quote.id, "mode": quote.mode,
        "status": "expired" if quote.status == "open" and quote.expires_at <= utcnow()
        else quote.status,
        "created_at": iso(quote.created_at), "expires_at": iso(quote.expires_at),
        "item_count": quote.item_count, "manifest_sha256": quote.manifest_sha256,
        "input_file_id": quote.input_file_id, **quote.controls,
        "pricing_estimate": {
            "currency": "usd", "low": money.to_wire(quote.low_micros),
            "expected": money.to_wire(quote.expected_micros),
            "high": money.to_wire(quote.high_micros),
            "provider_subtotal": money.to_wire(quote.provider_subtotal_micros),
            "fee": money.to_wire(quote.fee_micros),
            "fee_rate": money.to_wire(quote.fee_ppm),
            "total": money.to_wire(quote.expected_micros)},
        "balance": {"covers_high": quote.balance_covers,
                    "reserve_on_create": money.to_wire(0 if quote.mode == "test"
                                                       else quote.high_micros)},
        "assumptions": quote.assumptions,
        "quote_lanes": {"selected": selected, "rejected": rejected},
        "work_unit_plan": quote.plan,
    }
    if available is not None:
        body["balance"]["available"] = money.to_wire(available)
        body["balance"]["shortfall"] = money.to_wire(max(0, quote.high_micros - available)
                                                     if quote.mode == "live" else 0)
    return body
