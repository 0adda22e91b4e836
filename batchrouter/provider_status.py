"""Provider health for people and for routing: the operator overview, and the periodic
write-back of observed health and turnaround to the catalog (SPEC §4 health, §11)."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from batchrouter.db import utcnow
from batchrouter.models import Item, Offering, Provider, ProviderCredential, WorkUnit

MIN_CALLS = 5  # below this many calls in the window, health stays as it was
MIN_SAMPLES = 5  # completed units needed before observed turnaround replaces the catalog's
TURNAROUND_DAYS = 7


def backlog(session: Session) -> dict:
    """lane -> {"units", "items"} still to run (pending, running or at the provider)."""
    rows = session.execute(
        select(WorkUnit.lane, func.count(func.distinct(WorkUnit.id)), func.count(Item.id))
        .join(Item, Item.work_unit_id == WorkUnit.id)
        .where(WorkUnit.status.in_(("pending", "running", "submitted")),
               Item.status.in_(("pending", "running")))
        .group_by(WorkUnit.lane)).all()
    return {lane: {"units": units, "items": items} for lane, units, items in rows}


def overview(session: Session, health, configured) -> list[dict]:
    """Per provider: access, breaker, rolling window, recent errors, and per-lane state."""
    waiting = backlog(session)
    saved = {c.provider_slug: c for c in session.scalars(select(ProviderCredential))}
    out = []
    for p in session.scalars(select(Provider).order_by(Provider.position)):
        lanes = []
        for o in sorted(p.offerings, key=lambda o: o.position):
            lanes.append({"lane": o.lane, "health": o.health, "enabled": o.enabled,
                          "breaker": health.state(o.lane) if health else "closed",
                          "window": health.window(o.lane) if health else None,
                          "backlog": waiting.get(o.lane, {"units": 0, "items": 0}),
                          "p50": o.turnaround_p50_s, "p90": o.turnaround_p90_s})
        cred = saved.get(p.slug)
        out.append({
            "provider": p, "configured": configured(p),
            "key_last4": cred.key_last4 if cred and cred.api_key_encrypted else "",
            "saved_base_url": cred.base_url if cred else "",
            "rpm": cred.requests_per_minute if cred else 0,
            "tpm": cred.tokens_per_minute if cred else 0,
            "breaker": health.state(p.slug) if health else "closed",
            "window": health.window(p.slug) if health else None,
            "errors": health.recent_errors(p.slug) if health else [],
            "backlog": sum(lane["backlog"]["items"] for lane in lanes), "lanes": lanes})
    return out


def _quantile(values: list[float], q: float) -> int:
    ordered = sorted(values)
    return int(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def write_back(session: Session, health) -> dict:
    """Copy what the breakers saw into the catalog so quotes route around sick lanes:
    offering health = the lane's rolling success rate (0 while its breaker is open), provider
    health likewise, `breaker_open` when a provider's breaker is not closed; and observed
    turnaround p50/p90 of completed units over the last week."""
    changed = {"offerings": 0, "providers": 0, "turnaround": 0}
    for o in session.scalars(select(Offering)):
        state, window = health.state(o.lane), health.window(o.lane)
        value = 0.0 if state == "open" else \
            round(window["success_rate"], 3) if window["calls"] >= MIN_CALLS else None
        if value is None and state == "closed" and o.health < 1.0 and window["calls"] == 0:
            value = 1.0  # recovered and quiet: back to full health
        if value is not None and value != o.health:
            o.health, o.updated_at = value, utcnow()
            changed["offerings"] += 1
    for p in session.scalars(select(Provider)):
        state, window = health.state(p.slug), health.window(p.slug)
        is_open = state != "closed"
        value = 0.0 if state == "open" else \
            round(window["success_rate"], 3) if window["calls"] >= MIN_CALLS else p.health
        if is_open != p.breaker_open or value != p.health:
            p.breaker_open, p.health = is_open, value
            changed["providers"] += 1
    changed["turnaround"] = _turnaround(session)
    return changed


def _turnaround(session: Session) -> int:
    since = utcnow() - timedelta(days=TURNAROUND_DAYS)
    rows = session.execute(select(WorkUnit.offering_id, WorkUnit.created_at, WorkUnit.updated_at)
                           .where(WorkUnit.status == "completed",
                                  WorkUnit.updated_at >= since)).all()
    samples: dict[int, list[float]] = {}
    for offering_id, started, finished in rows:
        samples.setdefault(offering_id, []).append((finished - started).total_seconds())
    updated = 0
    for offering_id, values in samples.items():
        offering = session.get(Offering, offering_id)
        if offering is None or len(values) < MIN_SAMPLES:
            continue
        p50, p90 = max(1, _quantile(values, 0.5)), max(1, _quantile(values, 0.9))
        if (p50, p90) != (offering.turnaround_p50_s, offering.turnaround_p90_s):
            offering.turnaround_p50_s, offering.turnaround_p90_s = p50, p90
            updated += 1
    return updated
