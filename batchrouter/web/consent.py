"""Cookie banner, Cookie settings and the policy pages (SPEC §10, §12), plus the request hook
that counts page views for visitors who allowed analytics — checked on the server."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from sqlalchemy.exc import SQLAlchemyError

from batchrouter import analytics, consent, policies
from batchrouter.consent import ANALYTICS_COOKIE, CONSENT_COOKIE, Choice
from batchrouter.extensions import db_session
from batchrouter.web.htmx import is_fragment_request

bp = Blueprint("consent", __name__)
_VISITOR_RE = re.compile(r"^vis_[0-9a-z]{26}$")
DAY = 24 * 3600


def _cfg():
    return current_app.config


def cookie_choice() -> Choice | None:
    """What the consent cookie says, whatever its policy version (None if absent/forged)."""
    if "consent_cookie" not in g:
        g.consent_cookie = consent.decode(_cfg()["SECRET_KEY"], request.cookies.get(CONSENT_COOKIE))
    return g.consent_cookie


def current_choice() -> Choice | None:
    """The choice in force: only one made under the current policy version counts."""
    choice = cookie_choice()
    return choice if choice and choice.version == _cfg()["BATCHROUTER_POLICY_VERSION"] else None


def visitor_id() -> str | None:
    raw = request.cookies.get(ANALYTICS_COOKIE, "")
    return raw if _VISITOR_RE.match(raw) else None


def analytics_on() -> bool:
    """Server-side consent check (cached per request) before anything is counted or set."""
    if "analytics_on" not in g:
        choice = current_choice()
        g.analytics_on = bool(choice and choice.analytics
                              and consent.analytics_allowed(db_session(), choice))
    return g.analytics_on


def cookie_catalog() -> list[dict]:
    cfg = _cfg()
    return consent.cookie_catalog(cfg["SESSION_COOKIE_NAME"], cfg["BATCHROUTER_CONSENT_COOKIE_DAYS"],
                                  cfg["BATCHROUTER_ANALYTICS_COOKIE_DAYS"],
                                  cfg["BATCHROUTER_SESSION_ABSOLUTE_TTL"] // 3600)


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") \
            and not urlsplit(target).netloc and "\\" not in target:
        return target
    return url_for("consent.settings")


def _set_cookie(response, name: str, value: str, days: int) -> None:
    response.set_cookie(name, value, max_age=days * DAY, secure=_cfg()["SESSION_COOKIE_SECURE"],
                        httponly=True, samesite="Lax", path="/")


def _delete_analytics_cookie(response) -> None:
    response.delete_cookie(ANALYTICS_COOKIE, path="/", secure=_cfg()["SESSION_COOKIE_SECURE"],
                           httponly=True, samesite="Lax")


def _parse_choice(form) -> tuple[str, bool]:
    choice = form.get("choice", "")
    if choice == "accept_all":
        return "accept_all", True
    if choice == "reject_all":
        return "reject_all", False
    return "customize", form.get("analytics") == "on"


@bp.post("/consent")
def save():
    """Record a cookie choice (banner or Cookie settings), then set or delete the cookies."""
    cfg = _cfg()
    action, allow = _parse_choice(request.form)
    previous = cookie_choice()
    if previous and previous.analytics and not allow:
        action = "withdraw"
    consent_id = previous.consent_id if previous else consent.new_consent_id()
    visitor = visitor_id() or (consent.new_visitor_id() if allow else None)
    session = db_session()
    consent.record_choice(session, consent_id=consent_id, analytics=allow,
                          version=cfg["BATCHROUTER_POLICY_VERSION"], action=action,
                          user_id=current_user.id if current_user.is_authenticated else None,
                          visitor_id=visitor, user_agent=request.headers.get("User-Agent"))
    session.commit()
    g.analytics_on = allow  # this response already follows the new choice
    if is_fragment_request():
        response = make_response(render_template("consent/_saved.html", analytics=allow))
    else:
        flash("Your cookie choice is saved: essential cookies only." if not allow
              else "Your cookie choice is saved: essential and analytics cookies.", "success")
        response = redirect(_safe_next(request.form.get("next")), code=303)
    choice = Choice(consent_id=consent_id, analytics=allow,
                    version=cfg["BATCHROUTER_POLICY_VERSION"])
    _set_cookie(response, CONSENT_COOKIE, consent.encode(cfg["SECRET_KEY"], choice),
                cfg["BATCHROUTER_CONSENT_COOKIE_DAYS"])
    if allow:
        _set_cookie(response, ANALYTICS_COOKIE, visitor, cfg["BATCHROUTER_ANALYTICS_COOKIE_DAYS"])
    elif request.cookies.get(ANALYTICS_COOKIE):
        _delete_analytics_cookie(response)
    return response


@bp.get("/cookies/settings")
def settings():
    """Reopen the choice: current state, what each category does, and the record kept."""
    choice = cookie_choice()
    history = consent.history(db_session(), choice.consent_id) if choice else []
    return render_template("consent/settings.html", choice=current_choice(), history=history,
                           cookies=cookie_catalog())


def policy_context() -> policies.Context:
    cfg = _cfg()
    from batchrouter import retention

    return policies.Context(operator_name=cfg["OPERATOR_NAME"], operator_email=cfg["OPERATOR_EMAIL"],
                            base_url=cfg["BASE_URL"].rstrip("/"),
                            policy_version=cfg["BATCHROUTER_POLICY_VERSION"],
                            subprocessors=policies.subprocessors(cfg), cookies=cookie_catalog(),
                            retention=retention.describe(retention.policy_from(cfg)))


def _policy_page(name: str, title: str):
    html = policies.render(name, policy_context(), _cfg()["BATCHROUTER_POLICY_DIR"])
    return render_template("consent/policy.html", body=html, title=title, page=name)


@bp.get("/privacy")
def privacy():
    """The privacy policy (operator-editable Markdown)."""
    return _policy_page("privacy", "Privacy policy")


@bp.get("/cookies")
def cookies():
    """The cookie policy: every cookie with its category, purpose and lifetime."""
    return _policy_page("cookies", "Cookie policy")


@bp.get("/terms")
def terms():
    """The terms of service."""
    return _policy_page("terms", "Terms of service")


def track_event(name: str) -> None:
    """Count an activation event for this visitor, only with analytics consent."""
    visitor = visitor_id()
    try:
        if visitor and analytics_on():
            # The request's own session: on SQLite a second writer would wait on its lock.
            session = db_session()
            analytics.count_event(session, visitor, name)
            session.commit()
    except SQLAlchemyError:  # the action the user took already committed; never fail it
        db_session().rollback()
        current_app.logger.warning("activation event not counted", exc_info=True)


def _countable(response) -> bool:
    return (request.method == "GET" and response.status_code == 200
            and response.mimetype == "text/html" and request.url_rule is not None
            and request.endpoint not in (None, "static") and not is_fragment_request())


def after_request(response):
    """Count a page view, or drop an analytics cookie that no longer has consent."""
    if request.endpoint == "static" or request.path.startswith(("/v1", "/openai/", "/webhooks/")):
        return response
    visitor = visitor_id()
    try:
        allowed = bool(visitor) and analytics_on()
    except SQLAlchemyError:  # cannot confirm consent: count nothing, keep the page
        db_session().rollback()
        allowed = False
    if request.cookies.get(ANALYTICS_COOKIE) and not allowed:
        if request.endpoint != "consent.save":  # save() set this response's cookies itself
            _delete_analytics_cookie(response)
        return response
    if allowed and _countable(response):
        _count_page_view(visitor)
    return response


def _count_page_view(visitor: str) -> None:
    """Count in the request's own session: on SQLite a second connection would wait on any
    lock this request still holds. The view is done, so anything it left uncommitted would
    be rolled back at teardown anyway. Counting never fails a page."""
    session = db_session()
    session.rollback()
    try:
        analytics.count_page_view(session, visitor, request.url_rule.rule)
        session.commit()
    except SQLAlchemyError:
        session.rollback()
        current_app.logger.warning("page view not counted (database busy)", exc_info=True)


def init_app(app) -> None:
    app.after_request(after_request)

    @app.context_processor
    def _consent_context():
        return {"consent_banner_needed": lambda: current_choice() is None,
                "consent_next": lambda: request.full_path.rstrip("?")
                if request.method == "GET" else request.path}
