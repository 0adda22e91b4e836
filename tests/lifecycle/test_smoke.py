"""The whole pipeline on the sandbox through a real RQ worker on real Redis."""
import json

import pytest

from batchrouter import ledger
from batchrouter.finalize import item_counts
from tests.factories import bearer, make_key, make_user, workspace_of
from tests.lifecycle.helpers import chat_items, quote_and_create

pytestmark = pytest.mark.pg


@pytest.fixture
def app_overrides(tmp_path):
    return {"BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage"),
            "BATCHROUTER_SANDBOX_BATCH_DELAY": 0.0, "BATCHROUTER_POLL_INTERVAL": 0.0}


def test_quote_create_run_finalize_download(app, client, session, seeded_catalog, worker):
    user = make_user(session)
    ws = workspace_of(session, user)
    _key, secret = make_key(session, user)
    items = chat_items(25)
    q, batch = quote_and_create(client, secret, items)
    assert batch["status"] == "queued" and batch["counts"]["pending"] == 25
    session.rollback()
    held = ledger.balances(session, ws)
    assert held.reserved == int(q["pricing_estimate"]["high"].replace(".", ""))
    worker()
    body = client.get(f"/v1/batches/{batch['id']}", headers=bearer(secret)).get_json()
    assert body["status"] == "completed", body
    assert body["counts"]["succeeded"] == 25 and body["progress_percent"] == 100
    session.rollback()
    after = ledger.balances(session, ws)
    settled = int(body["cost_usd"]["settled"].replace(".", ""))
    assert after.reserved == 0 and after.spent == settled
    assert after.available == 5_000_000 - settled
    assert ledger.verify_balances(session) == []
    assert item_counts(session, batch["id"])["succeeded"] == 25
    urls = client.get(f"/v1/batches/{batch['id']}/artifact-url", headers=bearer(secret))
    assert urls.status_code == 200
    download = client.get(urls.get_json()["results"]["url"].split("5000", 1)[1])
    lines = [json.loads(line) for line in download.data.decode().splitlines()]
    assert [line["customer_item_id"] for line in lines] == [i["customer_item_id"] for i in items]
    first = lines[0]
    assert first["status"] == "succeeded" and first["provider"] == "sandbox"
    assert "sandbox output" in first["output"]["text"]
    assert set(first["usage"]) == {"input_tokens", "output_tokens"}
    receipt = client.get(f"/v1/batches/{batch['id']}/billing-receipt", headers=bearer(secret))
    assert receipt.get_json()["settled"] == body["cost_usd"]["settled"]
