"""JSON blueprints: /v1, /openapi.json, health endpoints; error handling for the whole app."""
from __future__ import annotations

from flask import Flask, current_app, jsonify

from batchrouter.api.errors import register_error_handlers


def register_api(app: Flask) -> None:
    from batchrouter.api import (
        batches,
        billing,
        catalog,
        health,
        inbound,
        metrics,
        openai_compat,
        team,
        v1,
        webhooks,
    )
    from batchrouter.api.openapi import build_spec

    register_error_handlers(app)
    app.register_blueprint(v1.bp)
    app.register_blueprint(catalog.bp)
    app.register_blueprint(team.bp)
    app.register_blueprint(batches.bp)
    app.register_blueprint(health.bp)
    metrics.init_app(app)
    app.register_blueprint(billing.bp)
    app.register_blueprint(openai_compat.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(inbound.bp)

    @app.get("/openapi.json")
    def openapi():
        """The OpenAPI 3.1 document of the public API."""
        return jsonify(build_spec(current_app.config["BASE_URL"].rstrip("/")))
