"""First-party, aggregate analytics (SPEC §10): page views per route per day and activation
events, counted only for visitors who allowed analytics (the caller checks consent)."""
from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from batchrouter.db import utcnow
from batchrouter.models import AnalyticsEvent, AnalyticsPageView, Batch

EVENTS = ("signed_up", "first_batch")


def _bump(session: Session, model, key: dict, counter: str) -> None:
    """Add one to the row for `key`, creating it on first use (race-safe)."""
    column = getattr(model, counter)
    where = [getattr(model, k) == v for k, v in key.items()]
    if session.execute(update(model).where(*where).values({counter: column + 1})).rowcount:
        return
    try:
        with session.begin_nested():
            session.add(model(**key, **{counter: 1}))
    except IntegrityError:  # another request created it meanwhile
        session.execute(update(model).where(*where).values({counter: column + 1}))


def count_page_view(session: Session, visitor_id: str, route: str,
                    day: date | None = None) -> None:
    _bump(session, AnalyticsPageView, {"day": day or utcnow().date(), "route": route[:120],
                                       "visitor_id": visitor_id}, "views")


def count_event(session: Session, visitor_id: str, name: str, day: date | None = None) -> None:
    if name not in EVENTS:
        raise ValueError(f"unknown analytics event {name!r}")
    _bump(session, AnalyticsEvent, {"day": day or utcnow().date(), "name": name,
                                    "visitor_id": visitor_id}, "count")


def page_view_totals(session: Session, days: int = 30) -> list[tuple]:
    """(day, route, views, visitors), newest day first: aggregates only."""
    since = utcnow().date() - timedelta(days=days - 1)
    stmt = (select(AnalyticsPageView.day, AnalyticsPageView.route,
                   func.sum(AnalyticsPageView.views), func.count(AnalyticsPageView.visitor_id))
            .where(AnalyticsPageView.day >= since)
            .group_by(AnalyticsPageView.day, AnalyticsPageView.route)
            .order_by(AnalyticsPageView.day.desc(), func.sum(AnalyticsPageView.views).desc()))
    return [tuple(r) for r in session.execute(stmt)]


def event_totals(session: Session, days: int = 30) -> list[tuple]:
    """(day, event, count), newest day first."""
    since = utcnow().date() - timedelta(days=days - 1)
    stmt = (select(AnalyticsEvent.day, AnalyticsEvent.name, func.sum(AnalyticsEvent.count))
            .where(AnalyticsEvent.day >= since)
            .group_by(AnalyticsEvent.day, AnalyticsEvent.name)
            .order_by(AnalyticsEvent.day.desc(), AnalyticsEvent.name))
    return [tuple(r) for r in session.execute(stmt)]


def is_first_batch(session: Session, workspace_id: str) -> bool:
    """True right after a workspace's first batch was created (the activation event)."""
    return session.scalar(select(func.count()).select_from(Batch)
                          .where(Batch.workspace_id == workspace_id)) == 1
