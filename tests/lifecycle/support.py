"""Helpers shared by the lifecycle tests written against SPEC §4–§8 (not collected as tests)."""
from __future__ import annotations

import json
import time

from sqlalchemy import select, update

from batchrouter import ledger
from batchrouter.models import Batch, Item, Offering, WorkUnit
from batchrouter.models.batches import BATCH_TERMINAL
from tests.factories import bearer, read

BATCH_LANE = "sandbox/sandbox-chat/batch"
SYNC_LANE = "sandbox/sandbox-chat/sync"
ERROR_LINE_KEYS = {"customer_item_id", "status", "error", "attempts"}
RESULT_LINE_KEYS = {"customer_item_id", "status", "model", "provider", "lane", "output", "usage",
                    "cost_usd", "response"}


def only_sync_lane(db, model: str = "sandbox-chat") -> None:
    """The operator disables the model's native-batch offering, so items run as chunked sync
    calls (each chunk of 100 committed on its own)."""
    with db.session() as s:
        s.execute(update(Offering).where(Offering.model_slug == model, Offering.mode == "batch")
                  .values(enabled=False))


def batch_row(db, batch_id: str) -> Batch:
    return read(db, lambda s: s.get(Batch, batch_id))


def units_of(db, batch_id: str) -> list[WorkUnit]:
    return read(db, lambda s: list(s.scalars(select(WorkUnit).where(WorkUnit.batch_id == batch_id)
                                            .order_by(WorkUnit.created_at, WorkUnit.id))))


def items_of(db, batch_id: str) -> list[Item]:
    return read(db, lambda s: list(s.scalars(select(Item).where(Item.batch_id == batch_id)
                                            .order_by(Item.seq))))


def balances(db, workspace_id: str) -> ledger.Balances:
    return read(db, lambda s: ledger.balances(s, workspace_id))


def get_json(client, secret: str, path: str, status: int = 200) -> dict:
    response = client.get(path, headers=bearer(secret))
    assert response.status_code == status, (path, response.get_json())
    return response.get_json()


def local(url: str) -> str:
    """A signed URL (made with BASE_URL http://127.0.0.1:5000) as a test-client path."""
    return url.split("127.0.0.1:5000", 1)[1]


def artifacts(client, secret: str, batch_id: str) -> tuple[list[dict], list[dict]]:
    """The results and errors files of a finished batch, through the signed URLs."""
    urls = get_json(client, secret, f"/v1/batches/{batch_id}/artifact-url")
    out = []
    for name in ("results", "errors"):
        response = client.get(local(urls[name]["url"]))
        assert response.status_code == 200, response.get_json()
        out.append([json.loads(line) for line in response.data.decode().splitlines()])
    return out[0], out[1]


def drive(db, worker, batch_id: str, timeout: float = 30) -> Batch:
    """Run the in-process worker until the batch is terminal (delayed outbox rows, such as a
    fallback unit's start or a retry backoff, become due between rounds)."""
    deadline = time.monotonic() + timeout
    while True:
        worker()
        batch = batch_row(db, batch_id)
        if batch.status in BATCH_TERMINAL:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status} after {timeout}s"
        time.sleep(0.2)


def assert_counts_match_items(db, batch_id: str) -> dict:
    """The batch's counters agree with its items (SPEC §5 counts)."""
    from batchrouter.finalize import item_counts

    batch = batch_row(db, batch_id)
    counted = read(db, lambda s: item_counts(s, batch_id))
    counters = {"succeeded": batch.succeeded, "failed": batch.failed,
                "cancelled": batch.cancelled, "expired": batch.expired,
                "running": batch.running, "pending": batch.pending}
    assert counters == {k: counted[k] for k in counters}, (counters, counted)
    assert sum(counters.values()) == batch.total
    return counters
