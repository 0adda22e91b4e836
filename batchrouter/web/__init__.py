"""Console blueprints and the template context every page shares."""
from __future__ import annotations

from flask import Flask

from batchrouter import money


def register_web(app: Flask) -> None:
    from batchrouter.web import (auth, batches, billing, console, keys, notifications, operator,
                                 operator_billing, operator_catalog, public, quote, team,
                                 webhooks)
    from batchrouter.web import (consent, operator_privacy, operator_records, privacy,
                                 recording, support)
    from batchrouter.web.session import init_login

    init_login(app)
    consent.init_app(app)
    recording.init_app(app)
    for module in (consent, operator_privacy, operator_records, privacy, support):
        app.register_blueprint(module.bp)
    from batchrouter.web import operator_providers
    app.register_blueprint(operator_providers.bp)
    for module in (auth, batches, console, keys, operator, operator_catalog, public, quote,
                   team, billing, operator_billing, webhooks, notifications):
        app.register_blueprint(module.bp)
    app.jinja_env.filters["usd"] = money.to_display
    app.jinja_env.filters["wire"] = money.to_wire
    app.jinja_env.filters["dt"] = lambda v: v.strftime("%Y-%m-%d %H:%M UTC") if v else "—"
