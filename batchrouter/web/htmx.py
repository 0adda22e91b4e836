"""The one helper that decides "fragment or page" (DESIGN §4)."""
from __future__ import annotations

from flask import make_response, render_template, request


def is_fragment_request() -> bool:
    """An htmx swap: HX-Request set, and neither a boosted navigation nor a history restore."""
    return (request.headers.get("HX-Request") == "true"
            and request.headers.get("HX-Boosted") != "true"
            and request.headers.get("HX-History-Restore-Request") != "true")


def render(page: str, partial: str, **context):
    """Render the partial for htmx swaps and the full page otherwise, with Vary: HX-Request."""
    template = partial if is_fragment_request() else page
    response = make_response(render_template(template, **context))
    response.headers["Vary"] = "HX-Request"
    return response


def redirect_to(url: str):
    """After an htmx POST, tell htmx to navigate (a 302 would be swapped into the page)."""
    from flask import redirect

    if is_fragment_request():
        response = make_response("", 204)
        response.headers["HX-Redirect"] = url
        return response
    return redirect(url, code=303)
