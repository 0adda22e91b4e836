"""Console blueprints and the template context every page shares."""
from __future__ import annotations

import functools

from flask import Flask, has_request_context, request

from batchrouter import money


def register_web(app: Flask) -> None:
    from batchrouter.web import (
        auth,
        batches,
        billing,
        consent,
        console,
        keys,
        notifications,
        operator,
        operator_billing,
        operator_catalog,
        operator_privacy,
        operator_records,
        privacy,
        public,
        quote,
        recording,
        support,
        team,
        webhooks,
    )
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
    app.jinja_env.globals["url_for"] = memoized_url_for(app)


def memoized_url_for(app: Flask):
    """`url_for` for templates, memoized: a console page builds some 35 URLs, most of them
    the same on every page (nav, footer, static files), and werkzeug builds each one afresh.
    The map does not change once the app is made and no url_defaults hooks are registered
    (checked here), so a relative URL depends only on the endpoint, its values and the
    request's script root. External URLs and options (`_external`, `_anchor`, …) are built
    every time."""
    build = app.url_for
    if any(app.url_default_functions.values()):
        return build

    @functools.lru_cache(maxsize=4096)
    def cached(script_root: str, endpoint: str, values: tuple) -> str:
        return build(endpoint, **dict(values))

    def url_for(endpoint: str, **values) -> str:
        if endpoint.startswith(".") or not has_request_context() \
                or any(name.startswith("_") for name in values):
            return build(endpoint, **values)
        try:
            return cached(request.script_root, endpoint, tuple(values.items()))
        except TypeError:  # an unhashable value (a list of query arguments): build it
            return build(endpoint, **values)
    return url_for
