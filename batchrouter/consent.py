"""Cookie consent (SPEC §10): the cookie catalogue, the signed consent cookie value, and the
server-side record of every choice. No Flask here; web/consent.py wires it to requests."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from batchrouter.ids import new_id
from batchrouter.models import AnalyticsEvent, AnalyticsPageView, ConsentRecord

CONSENT_COOKIE = "br_consent"
ANALYTICS_COOKIE = "br_analytics"
ACTIONS = ("accept_all", "reject_all", "customize", "withdraw", "privacy_request")


@dataclass(frozen=True)
class Choice:
    """What the browser's consent cookie says (essential is always on)."""

    consent_id: str
    analytics: bool
    version: str


def cookie_catalog(session_cookie: str, consent_days: int, analytics_days: int,
                   session_hours: int) -> list[dict]:
    """Every cookie the app sets; the cookie policy and its test read this list."""
    return [
        {"name": session_cookie, "category": "essential",
         "purpose": "Keeps you signed in and carries the anti-forgery (CSRF) token of forms.",
         "lifetime": f"{session_hours} hours at most (ends when you sign out)"},
        {"name": CONSENT_COOKIE, "category": "essential",
         "purpose": "Remembers your cookie choice and the policy version you answered.",
         "lifetime": f"{consent_days} days"},
        {"name": ANALYTICS_COOKIE, "category": "analytics",
         "purpose": "A random visitor id so page views per route and day can be counted "
                    "first-party; set only after you allow analytics.",
         "lifetime": f"{analytics_days} days (deleted at once when you withdraw)"},
    ]


def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt="batchrouter:consent")


def encode(secret: str, choice: Choice) -> str:
    return _serializer(secret).dumps({"id": choice.consent_id, "a": int(choice.analytics),
                                      "v": choice.version})


def decode(secret: str, raw: str | None) -> Choice | None:
    """The choice a cookie holds, or None when absent or tampered with."""
    if not raw:
        return None
    try:
        data = _serializer(secret).loads(raw)
        return Choice(consent_id=str(data["id"]), analytics=bool(data["a"]), version=str(data["v"]))
    except (BadSignature, KeyError, TypeError, ValueError):
        return None


def hash_user_agent(user_agent: str | None) -> str | None:
    return hashlib.sha256(user_agent.encode()).hexdigest() if user_agent else None


def new_consent_id() -> str:
    return new_id("cns")


def new_visitor_id() -> str:
    return new_id("vis")


def record_choice(session: Session, *, consent_id: str, analytics: bool, version: str,
                  action: str, user_id: str | None = None, visitor_id: str | None = None,
                  user_agent: str | None = None) -> ConsentRecord:
    """Append the choice as made; withdrawing analytics also erases that visitor's analytics."""
    if action not in ACTIONS:
        raise ValueError(f"unknown consent action {action!r}")
    record = ConsentRecord(consent_id=consent_id, user_id=user_id, essential=True,
                           analytics=analytics, policy_version=version, action=action,
                           visitor_id=visitor_id, user_agent_hash=hash_user_agent(user_agent))
    session.add(record)
    if not analytics and visitor_id:
        erase_visitors(session, [visitor_id])
    return record


def history(session: Session, consent_id: str, limit: int = 20) -> list[ConsentRecord]:
    """The choices made in this browser, newest first."""
    return list(session.scalars(select(ConsentRecord)
                                .where(ConsentRecord.consent_id == consent_id)
                                .order_by(ConsentRecord.id.desc()).limit(limit)))


def records_of_user(session: Session, user_id: str) -> list[ConsentRecord]:
    return list(session.scalars(select(ConsentRecord).where(ConsentRecord.user_id == user_id)
                                .order_by(ConsentRecord.id)))


def visitor_ids_of_user(session: Session, user_id: str) -> set[str]:
    return {v for v in session.scalars(select(ConsentRecord.visitor_id)
                                       .where(ConsentRecord.user_id == user_id)) if v}


def erase_visitors(session: Session, visitor_ids) -> int:
    """Delete every analytics row of these visitors; returns the rows removed."""
    ids = [v for v in visitor_ids if v]
    if not ids:
        return 0
    removed = session.execute(delete(AnalyticsPageView)
                              .where(AnalyticsPageView.visitor_id.in_(ids))).rowcount or 0
    removed += session.execute(delete(AnalyticsEvent)
                               .where(AnalyticsEvent.visitor_id.in_(ids))).rowcount or 0
    return removed


def withdraw_for_user(session: Session, user_id: str, version: str) -> dict:
    """Privacy request `withdraw_consent`: every browser the user chose in is recorded as
    withdrawn and their analytics is erased. The cookie itself goes on that browser's next
    request (web/consent.py drops an analytics cookie whose consent is no longer on record)."""
    latest: dict[str, ConsentRecord] = {}
    for record in records_of_user(session, user_id):
        latest[record.consent_id] = record
    for consent_id, record in latest.items():
        session.add(ConsentRecord(consent_id=consent_id, user_id=user_id, essential=True,
                                  analytics=False, policy_version=version,
                                  action="privacy_request", visitor_id=record.visitor_id))
    erased = erase_visitors(session, visitor_ids_of_user(session, user_id))
    return {"browsers": len(latest), "analytics_rows_erased": erased}


def analytics_allowed(session: Session, choice: Choice | None) -> bool:
    """Server-side truth: the latest record for this consent id must still allow analytics
    (a withdrawal made elsewhere, e.g. through a privacy request, wins over the cookie)."""
    if choice is None or not choice.analytics:
        return False
    latest = session.scalars(select(ConsentRecord.analytics)
                             .where(ConsentRecord.consent_id == choice.consent_id)
                             .order_by(ConsentRecord.id.desc()).limit(1)).first()
    return bool(latest)
