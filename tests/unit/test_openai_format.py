"""OpenAI's status names mapped from ours (SPEC §6), and the line shapes."""
from __future__ import annotations

from datetime import datetime

from batchrouter import openai_format
from batchrouter.models import Batch, Item, OpenAIBatch

ALL_OURS = ("pending", "queued", "routing", "dispatched", "processing", "completing",
            "completed", "failed", "expired", "cancelling", "cancelled")


def test_every_status_of_ours_has_an_openai_name():
    assert set(openai_format.STATUS) == set(ALL_OURS)
    assert {openai_format.STATUS[s] for s in ("pending", "queued")} == {"validating"}
    assert {openai_format.STATUS[s] for s in ("routing", "dispatched", "processing")} == \
        {"in_progress"}
    assert openai_format.STATUS["completing"] == "finalizing"
    assert openai_format.STATUS["failed"] == openai_format.STATUS["completed"] == "completed"
    assert openai_format.STATUS["expired"] == "expired"
    row = OpenAIBatch(state="failed")
    assert openai_format.status_of(row, None) == "failed"
    assert openai_format.status_of(OpenAIBatch(state="creating"), None) == "validating"


def test_expired_batch_timestamps_and_counts():
    created = datetime(2026, 1, 1, 0, 0, 0)
    row = OpenAIBatch(id="bat_x", endpoint="/v1/chat/completions", completion_window="24h",
                      input_file_id="file_x", metadata_={}, created_at=created, usage=None)
    batch = Batch(id="bat_x", status="expired", mode="live", quote_id="qlock_x", total=5,
                  succeeded=2, failed=1, cancelled=0, expired=2, created_at=created,
                  started_at=datetime(2026, 1, 1, 0, 1), finished_at=datetime(2026, 1, 2),
                  sla_deadline=datetime(2026, 1, 2),
                  controls={"sla_tier": "standard", "routing_mode": "cheapest",
                            "privacy_tier": "standard"},
                  quoted_expected_micros=1, quoted_high_micros=2, reserved_micros=2,
                  settled_micros=1, cancel_requested_at=None)
    body = openai_format.batch_object(row, batch)
    assert body["status"] == "expired"
    assert body["expired_at"] == body["expires_at"] == 1767312000
    assert body["in_progress_at"] == 1767225660 and body["completed_at"] is None
    assert body["request_counts"] == {"total": 5, "completed": 2, "failed": 3}


def test_error_lines():
    refused = Item(id="itm_abc", customer_item_id="a", status="failed", attempts=1,
                   charged_micros=0, attempt_log=[{"provider_request_id": "req_1"}],
                   error={"code": "context_too_long", "message": "Too long.",
                          "status_code": 400, "retryable": False})
    line = openai_format.error_line(refused)
    assert line["id"] == "batch_req_abc" and line["error"] is None
    assert line["response"]["status_code"] == 400 and line["response"]["request_id"] == "req_1"
    assert line["response"]["body"]["error"]["code"] == "context_too_long"
    expired = Item(id="itm_def", customer_item_id="b", status="expired", attempts=0,
                   charged_micros=0, attempt_log=[],
                   error={"code": "batch_expired", "message": "Deadline passed."})
    line = openai_format.error_line(expired)
    assert line["response"] is None and line["error"]["code"] == "batch_expired"


def test_bodies_are_rebuilt_in_the_endpoint_shape():
    result = {"model": "claude-haiku-4-5", "output": {"text": "Hi", "finish_reason": "length"},
              "usage": {"input_tokens": 7, "output_tokens": 3},
              "response": {"type": "message", "content": [{"type": "text", "text": "Hi"}]}}
    chat = openai_format.response_body("/v1/chat/completions", result, "r1")
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["finish_reason"] == "length"
    assert chat["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    resp = openai_format.response_body("/v1/responses", result, "r1")
    assert resp["object"] == "response" and resp["status"] == "incomplete"
    assert resp["usage"]["total_tokens"] == 10
    native = {"object": "chat.completion", "id": "chatcmpl-1", "usage": {"total_tokens": 1}}
    assert openai_format.response_body("/v1/chat/completions",
                                       dict(result, response=native), "r1") is native
