"""Public catalog endpoints and the manifest/quote endpoints (SPEC §4, §6)."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from batchrouter import catalog, files, health, ledger, manifest, provider_status, quotes
from batchrouter.api.auth import current_principal, require
from batchrouter.api.idempotent import idempotent
from batchrouter.api.v1 import json_body
from batchrouter.db import iso
from batchrouter.errors import InvalidRequest
from batchrouter.extensions import db_session, manifest_limits, quote_settings, runtime

bp = Blueprint("catalog_api", __name__, url_prefix="/v1")


def offering_json(o, configured: bool) -> dict:
    return catalog.offering_document(o) | {
        "lane": o.lane, "provider_configured": configured,
        "provider_health": o.provider.health, "breaker_open": o.provider.breaker_open}


@bp.get("/catalog/models")
def list_models():
    """Models and their offerings; filters: operation, provider, feature (public)."""
    args = request.args
    session = db_session()
    settings = quote_settings()
    models = catalog.list_models(session, operation=args.get("operation"),
                                 provider=args.get("provider"), feature=args.get("feature"))
    version = catalog.version(session)
    data = []
    for m in models:
        offerings = [o for o in m.offerings
                     if (not args.get("provider") or o.provider_slug == args["provider"])
                     and (not args.get("feature") or args["feature"] in o.features)]
        data.append({"id": m.slug, "object": "model", "name": m.name,
                     "operations": m.operations, "context_window": m.context_window,
                     "max_output_tokens": m.max_output_tokens,
                     "typical_output_tokens": m.typical_output_tokens, "family": m.family,
                     "offerings": [offering_json(o, catalog.is_configured(
                         o.provider, settings.credentials)) for o in offerings]})
    return jsonify({"object": "list", "data": data,
                    "pricing_updated_at": iso(version.pricing_updated_at) if version else None,
                    "prices_taken_at": version.prices_taken_at if version else None})


@bp.get("/catalog/providers")
def list_providers():
    """Providers with whether credentials are present and their health (public)."""
    settings = quote_settings()
    breakers = health.Health(runtime().redis, health.policy_from(current_app.config))
    waiting = provider_status.backlog(db_session())
    data = [{"id": p.slug, "object": "provider", "name": p.name, "adapter": p.adapter,
             "base_url": p.base_url,
             "configured": catalog.is_configured(p, settings.credentials),
             "enabled": p.enabled, "health": p.health, "breaker_open": p.breaker_open,
             "breaker": breakers.state(p.slug),
             "success_rate": round(breakers.window(p.slug)["success_rate"], 3),
             "lanes": [{"lane": o.lane, "health": o.health, "breaker": breakers.state(o.lane),
                        "backlog_items": waiting.get(o.lane, {}).get("items", 0)}
                       for o in sorted(p.offerings, key=lambda o: o.position)],
             "regions": p.regions, "max_batch_items": p.max_batch_items,
             "max_batch_bytes": p.max_batch_bytes, "notes": p.notes}
            for p in catalog.list_providers(db_session())]
    return jsonify({"object": "list", "data": data})


def _declared_count() -> int | None:
    raw = request.headers.get("x-batchrouter-item-count")
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise InvalidRequest("x-batchrouter-item-count must be a whole number.",
                             code="invalid_header")
    return int(raw)


def _store(stream, filename: str, purpose: str):
    principal = current_principal()
    session = db_session()
    record, _report = files.store_manifest(
        session, runtime().storage, workspace_id=principal.workspace_id, mode=principal.mode,
        stream=stream, filename=filename, purpose=purpose,
        models=quotes.model_operations(session), limits=manifest_limits(),
        declared_count=_declared_count(),
        declared_sha256=request.headers.get("x-content-sha256"))
    session.commit()
    return jsonify(files.to_json(record)), 201


@bp.post("/files")
@require("submit")
def upload_file():
    """Upload a JSONL manifest (multipart, purpose=batch); preflighted while stored."""
    upload = request.files.get("file")
    if upload is None:
        raise InvalidRequest("Send the manifest as the multipart field 'file'.",
                             code="missing_file")
    return _store(upload.stream, upload.filename or "manifest.jsonl",
                  request.form.get("purpose", "batch"))


@bp.post("/batches/input-manifests")
@require("submit")
def upload_raw_manifest():
    """Upload a manifest as a raw NDJSON body (with optional count and sha256 headers)."""
    return _store(request.stream, request.args.get("filename", "manifest.jsonl"), "batch")


@bp.get("/files/<file_id>")
@require("read")
def get_file(file_id: str):
    """A file's metadata and preflight report."""
    record = files.get_file(db_session(), current_principal().workspace_id, file_id)
    return jsonify(files.to_json(record))


def preflight_error(exc: manifest.PreflightFailed):
    from batchrouter.api.errors import error_json

    report = exc.report
    return error_json(400, "preflight_failed",
                      f"The manifest has {report.error_count} problem(s); nothing was "
                      "reserved.", details={"preflight": [p.to_json() for p in report.errors],
                                            "error_count": report.error_count,
                                            "item_count": report.item_count,
                                            "truncated": report.error_count > len(report.errors)})


@bp.post("/quotes/model")
@bp.post("/batches/quote")
@require("quote")
@idempotent
def create_quote():
    """Preflight and quote a manifest; returns a 10-minute price lock (reserves nothing)."""
    principal = current_principal()
    data = json_body()
    session = db_session()
    controls = quotes.parse_controls(data)
    settings = quote_settings()
    try:
        report, file_id = quotes.load_manifest(session, runtime().storage, settings,
                                               principal.workspace_id, data)
        quote = quotes.create_quote(session, settings, workspace_id=principal.workspace_id,
                                    mode=principal.mode, report=report, controls=controls,
                                    input_file_id=file_id)
    except manifest.PreflightFailed as exc:
        session.rollback()
        return preflight_error(exc)
    session.commit()
    available = ledger.balances(session, principal.workspace_id).available
    return jsonify(quotes.to_json(quote, available=available)), 201


@bp.get("/quotes/<quote_id>")
@require("quote")
def get_quote(quote_id: str):
    """A stored quote (expired ones say so)."""
    principal = current_principal()
    session = db_session()
    quote = quotes.get_quote(session, principal.workspace_id, quote_id)
    return jsonify(quotes.to_json(quote, available=ledger.balances(
        session, principal.workspace_id).available))

