"""Public pages: the Models catalog and the API guide (/models, /docs)."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template

from batchrouter import catalog
from batchrouter.api.openapi import build_spec
from batchrouter.extensions import db_session, quote_settings

bp = Blueprint("public", __name__)


@bp.get("/models")
def models():
    """Every model with the lanes that serve it and their list prices."""
    session = db_session()
    credentials = quote_settings().credentials
    return render_template("public/models.html", models=catalog.list_models(session),
                           version=catalog.version(session),
                           configured=lambda p: catalog.is_configured(p, credentials))


@bp.get("/docs")
def docs():
    """API guide: a curl quickstart, then the reference generated from the OpenAPI file."""
    spec = build_spec(current_app.config["BASE_URL"].rstrip("/"))
    return render_template("public/docs.html", spec=spec, base_url=spec["servers"][0]["url"])
