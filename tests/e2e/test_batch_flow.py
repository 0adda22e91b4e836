"""In real Chromium: quote → create → watch the progress bar reach 100 % → download results."""
import json

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.conftest import WorkerProcess, subprocess_env
from tests.factories import PASSWORD, make_user

pytestmark = pytest.mark.e2e

ITEMS = "\n".join(json.dumps({"customer_item_id": f"e2e-{i}", "operation": "responses",
                              "model": "sandbox-chat",
                              "input": {"messages": [{"role": "user", "content": f"Hi {i}"}]}})
                  for i in range(12))


@pytest.fixture
def app_overrides(tmp_path):
    return {"BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage"),
            "BATCHROUTER_SANDBOX_BATCH_DELAY": 1.5, "BATCHROUTER_POLL_INTERVAL": 0.5,
            "BATCHROUTER_SCHEDULER_TICK": 0.2}


@pytest.fixture
def running_worker(live_server):
    worker = WorkerProcess(subprocess_env(live_server.app)).start()
    yield worker
    worker.kill(15)


def test_quote_create_watch_download(live_server, running_worker, page: Page):
    app = live_server.app
    from batchrouter import catalog

    with app.extensions["batchrouter"].db.session() as s:
        catalog.seed(s)
        make_user(s, "runner@example.com")
    page.goto(live_server.url + "/login")
    page.get_by_label("Email").fill("runner@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="New batch").click()
    page.get_by_label("Items (JSONL, or a JSON array)").fill(ITEMS)
    page.get_by_role("button", name="Preflight and quote").click()
    expect(page.get_by_test_id("selected-lanes")).to_contain_text("sandbox/sandbox-chat/batch")
    page.get_by_role("button", name="Create batch").click()
    expect(page.get_by_role("heading", name="Progress")).to_be_visible()
    # The fragment polls itself; the bar reaches 100 % without a reload.
    expect(page.get_by_test_id("progress-percent")).to_have_text("100%", timeout=30_000)
    expect(page.get_by_test_id("batch-status")).to_have_text("completed")
    href = page.get_by_test_id("download-results").get_attribute("href")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    response = requests.get(live_server.url + href, cookies=cookies, timeout=10)
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert sorted(line["customer_item_id"] for line in lines) == \
        sorted(f"e2e-{i}" for i in range(12))
    assert all(line["status"] == "succeeded" for line in lines)
