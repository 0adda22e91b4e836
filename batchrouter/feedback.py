"""Quality feedback on item results (score 1–5); routing's `quality` mode reads it."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from batchrouter.db import iso, utcnow
from batchrouter.errors import NotFound, ValidationFailed
from batchrouter.models import Batch, Feedback, Item, Quote

MIN_RATINGS = 20
WINDOW_DAYS = 30


def record(session: Session, batch: Batch, customer_item_id: str, score, *, label=None,
           note=None, user_id=None) -> Feedback:
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        raise ValidationFailed("score must be a whole number from 1 to 5.", code="invalid_score")
    if label is not None and (not isinstance(label, str) or len(label) > 64):
        raise ValidationFailed("label must be a string of at most 64 characters.",
                               code="invalid_label")
    if note is not None and (not isinstance(note, str) or len(note) > 2000):
        raise ValidationFailed("note must be a string of at most 2000 characters.",
                               code="invalid_note")
    item = session.scalars(select(Item).where(Item.batch_id == batch.id,
                                              Item.customer_item_id == customer_item_id)).first()
    if item is None:
        raise NotFound("No such item in this batch.", code="item_not_found")
    lane = next(lane for lane in session.get(Quote, batch.quote_id).lanes
                if lane["index"] == item.lane)
    row = Feedback(workspace_id=batch.workspace_id, batch_id=batch.id, item_id=item.id,
                   provider=lane["provider"], model=lane["model"], score=score, label=label,
                   note=note, created_by=user_id)
    session.add(row)
    session.flush()
    return row


def quality_scores(session: Session) -> dict:
    """(provider, model) -> mean score scaled to 0–1, where there are ≥ 20 ratings in 30 days."""
    since = utcnow() - timedelta(days=WINDOW_DAYS)
    rows = session.execute(select(Feedback.provider, Feedback.model, func.avg(Feedback.score),
                                  func.count()).where(Feedback.created_at >= since)
                           .group_by(Feedback.provider, Feedback.model)).all()
    return {(p, m): (float(avg) - 1) / 4 for p, m, avg, n in rows if n >= MIN_RATINGS}


def to_json(row: Feedback) -> dict:
    return {"object": "feedback", "batch_id": row.batch_id, "item_id": row.item_id,
            "provider": row.provider, "model": row.model, "score": row.score,
            "label": row.label, "note": row.note, "created_at": iso(row.created_at)}
