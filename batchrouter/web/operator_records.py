"""Operator records pages (SPEC §10): audit log, API events and rate-limit hits, support
messages, analytics aggregates, and the retention policy with the last purge."""
from __future__ import annotations

from datetime import datetime

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for

from batchrouter import analytics, apievents, queue, records, retention, support
from batchrouter.extensions import db_session, runtime
from batchrouter.web.operator import operator_required

bp = Blueprint("operator_records", __name__, url_prefix="/operator")


def _when(name: str) -> datetime | None:
    raw = (request.args.get(name) or "").strip()
    try:
        return datetime.fromisoformat(raw) if raw else None
    except ValueError:
        return None


@bp.get("/audit")
@operator_required
def audit():
    """The security log, filtered by workspace, user, action and time."""
    session = db_session()
    filters = {k: (request.args.get(k) or "").strip() for k in ("workspace", "user", "action",
                                                                 "since", "until")}
    events = support.audit_log(session, workspace_id=filters["workspace"] or None,
                               user=filters["user"] or None, kind=filters["action"] or None,
                               since=_when("since"), until=_when("until"))
    return render_template("operator/audit.html", events=events, filters=filters,
                           kinds=support.audit_kinds(session), label=records.label)


def _flush() -> None:
    rt = runtime()
    if rt.redis_url:
        session = db_session()
        apievents.flush(session, rt.redis)
        session.commit()


@bp.get("/api-events")
@operator_required
def api_events():
    """API requests (method, path, status, latency, key, workspace) and rate-limit hits."""
    _flush()
    session = db_session()
    status = request.args.get("status", "")
    filters = {k: (request.args.get(k) or "").strip() for k in ("workspace", "key", "path")}
    events = apievents.search_events(session, workspace_id=filters["workspace"] or None,
                                     key_id=filters["key"] or None, path=filters["path"] or None,
                                     status=int(status) if status.isdigit() else None)
    return render_template("operator/api_events.html", events=events, filters=filters,
                           status=status, hits=apievents.recent_rate_limit_hits(session))


@bp.get("/support")
@operator_required
def support_messages():
    """Messages from the contact form; search by email, workspace, batch or error reference."""
    query = (request.args.get("q") or "").strip()
    return render_template("operator/support.html", q=query,
                           messages=support.recent(db_session(), query=query or None))


@bp.get("/analytics")
@operator_required
def analytics_page():
    """First-party aggregates: page views per route per day and activation events."""
    session = db_session()
    return render_template("operator/analytics.html",
                           views=analytics.page_view_totals(session),
                           events=analytics.event_totals(session))


@bp.get("/retention")
@operator_required
def retention_page():
    """The retention policy in force and what the last purges removed."""
    session = db_session()
    policy = retention.policy_from(current_app.config)
    return render_template("operator/retention.html", rows=retention.describe(policy),
                           runs=retention.recent_runs(session), last=retention.last_run(session))


@bp.post("/retention/run")
@operator_required
def retention_run():
    """Queue a purge now instead of waiting for the schedule."""
    session = db_session()
    queue.add_outbox(session, "jobs.privacy.purge_expired")
    session.commit()
    flash("A retention purge is queued; refresh in a moment.", "success")
    return redirect(url_for("operator_records.retention_page"), code=303)
