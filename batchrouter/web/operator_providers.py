"""Operator providers page: access (keys, base URLs, rate limits), test connection, health,
breakers, backlog and recent errors per provider and lane; OpenAI-compatible servers."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, request, url_for
from flask_login import current_user

from batchrouter import catalog, health, provider_config, provider_status, records
from batchrouter.errors import DomainError
from batchrouter.extensions import db_session, quote_settings, runtime
from batchrouter.web.htmx import redirect_to, render
from batchrouter.web.operator import operator_required

bp = Blueprint("operator_providers", __name__, url_prefix="/operator/providers")


def _health() -> health.Health:
    return health.Health(runtime().redis, health.policy_from(current_app.config))


@bp.get("")
@operator_required
def index():
    """Every provider with its access, health, breaker state, backlog and recent errors."""
    credentials = quote_settings().credentials
    rows = provider_status.overview(db_session(), _health(),
                                    lambda p: catalog.is_configured(p, credentials))
    return render("operator/providers.html", "operator/_providers_health.html", rows=rows)


@bp.post("/<slug>")
@operator_required
def save(slug: str):
    """Save a provider's key (never shown again), base URL and rate limits."""
    session = db_session()
    form = request.form
    try:
        row = provider_config.save(session, current_app.config["SECRET_KEY"], slug,
                                   api_key=form.get("api_key"), base_url=form.get("base_url", ""),
                                   rpm=form.get("requests_per_minute"),
                                   tpm=form.get("tokens_per_minute"), user_id=current_user.id)
    except DomainError as exc:
        session.rollback()
        flash(f"Not saved: {exc.message}", "error")
        return redirect_to(url_for("operator_providers.index"))
    _audit(session, "provider_access_saved", slug)
    session.commit()
    suffix = f" (key ending {row.key_last4})" if row.key_last4 else ""
    flash(f"Saved access for {slug}{suffix}.", "success")
    return redirect_to(url_for("operator_providers.index"))


@bp.post("/<slug>/forget-key")
@operator_required
def forget_key(slug: str):
    session = db_session()
    provider_config.forget_key(session, slug)
    _audit(session, "provider_key_removed", slug)
    session.commit()
    flash(f"Removed the saved key of {slug}.", "success")
    return redirect_to(url_for("operator_providers.index"))


@bp.post("/<slug>/test")
@operator_required
def test(slug: str):
    """Make one cheap authenticated call (list models) with the saved or configured access."""
    try:
        ok, message = provider_config.test_connection(db_session(), current_app.config, slug)
    except DomainError as exc:
        ok, message = False, exc.message
    return render("operator/provider_test.html", "operator/_provider_test.html",
                  slug=slug, ok=ok, message=message)


@bp.post("/register")
@operator_required
def register():
    """Add an OpenAI-compatible server (vLLM, Ollama, llama.cpp, Together, Groq …)."""
    session = db_session()
    form = request.form
    try:
        provider = provider_config.register_compatible(
            session, (form.get("slug") or "").strip(), form.get("name", ""),
            form.get("base_url", ""))
        if (form.get("api_key") or "").strip():
            provider_config.save(session, current_app.config["SECRET_KEY"], provider.slug,
                                 api_key=form.get("api_key"), base_url="",
                                 user_id=current_user.id)
    except DomainError as exc:
        session.rollback()
        flash(f"Not registered: {exc.message}", "error")
        return redirect_to(url_for("operator_providers.index"))
    _audit(session, "provider_registered", provider.slug)
    session.commit()
    flash(f"Registered {provider.name}. Add its models and prices as catalog offerings "
          "(catalog import), then it can be routed to.", "success")
    return redirect_to(url_for("operator_providers.index"))


@bp.post("/<path:scope>/breaker")
@operator_required
def reset_breaker(scope: str):
    """Close a breaker by hand (after fixing a key, say)."""
    _health().force(scope, "closed")
    flash(f"Breaker of {scope} closed.", "success")
    return redirect_to(url_for("operator_providers.index"))


def _audit(session, event: str, slug: str) -> None:
    records.log_security(session, event, user_id=current_user.id, provider=slug)
