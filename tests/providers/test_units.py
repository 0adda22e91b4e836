"""Provider pieces in isolation: outcome classification, Anthropic translation, breakers,
shared rate limits, credential encryption."""
from __future__ import annotations

import time

import pytest

from batchrouter import health, provider_config
from batchrouter.providers import Connection, connect
from batchrouter.providers.anthropic_api import from_message, to_messages
from batchrouter.providers.base import ItemRequest
from batchrouter.providers.classify import from_status, retry_after
from tests.providers.fakes import FakeAnthropic, FakeOpenAI


def test_retry_after_prefers_milliseconds_then_seconds_then_dates():
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after({"retry-after": "3"}) == 3.0
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_after({"retry-after": later}) <= 31
    assert retry_after({}) is None


@pytest.mark.parametrize("status,message,code,retryable", [
    (429, "slow down", "rate_limited", True), (503, "overloaded", "provider_unavailable", True),
    (408, "timeout", "provider_timeout", True), (500, "oops", "provider_unavailable", True),
    (400, "maximum context length is 8192 tokens", "context_too_long", False),
    (400, "Your request was rejected by our safety system", "content_policy", False),
    (400, "missing field", "invalid_request", False),
    (401, "bad key", "provider_auth_failed", False)])
def test_every_status_is_classified(status, message, code, retryable):
    err = from_status("openai", status, message)
    assert (err["code"], err["retryable"], err["status_code"]) == (code, retryable, status)


def _req(body, url="/v1/chat/completions"):
    return ItemRequest("itm_1", "c1", "responses", url, body)


def test_openai_shaped_items_translate_to_messages_and_back():
    params = to_messages("claude-haiku", _req({
        "messages": [{"role": "system", "content": "Rules."},
                     {"role": "user", "content": [
                         {"type": "text", "text": "What is this?"},
                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                     {"role": "assistant", "content": None, "tool_calls": [
                         {"id": "call_1", "type": "function",
                          "function": {"name": "look", "arguments": '{"x": 1}'}}]},
                     {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}],
        "temperature": 1.7, "stop": "END", "max_completion_tokens": 99,
        "tools": [{"type": "function", "function": {"name": "look", "parameters": {
            "type": "object", "properties": {"x": {"type": "integer"}}}}}],
        "tool_choice": "required"}))
    assert params["system"] == "Rules." and params["max_tokens"] == 99
    assert params["temperature"] == 1.0 and params["stop_sequences"] == ["END"]
    assert params["messages"][0]["content"][1] == {
        "type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    assert params["messages"][1]["content"][0] == {"type": "tool_use", "id": "call_1",
                                                   "name": "look", "input": {"x": 1}}
    assert params["messages"][2]["content"][0]["type"] == "tool_result"
    assert params["tools"][0]["input_schema"]["properties"]["x"]["type"] == "integer"
    assert params["tool_choice"] == {"type": "any"}
    # The responses shape: input + instructions; max_tokens defaults (it is required).
    params = to_messages("m", _req({"input": "hi", "instructions": "Be nice."}, "/v1/responses"))
    assert params["messages"] == [{"role": "user", "content": "hi"}]
    assert params["system"] == "Be nice." and params["max_tokens"] == 4096

    result = from_message("itm_1", {
        "id": "msg_1", "type": "message", "stop_reason": "tool_use",
        "content": [{"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"x": 2}}],
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 3}})
    assert result.output["finish_reason"] == "tool_calls"
    assert result.output["tool_calls"][0]["function"] == {"name": "look", "arguments": '{"x": 2}'}
    assert result.usage == {"input_tokens": 15, "output_tokens": 3}


TRANSPORTS = ["wire", "aiohttp", "httpx"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_openai_sync_normalizes_tool_calls_responses_and_embeddings(transport):
    fake = FakeOpenAI()
    try:
        provider = connect("openai", Connection("openai", fake.url + "/v1", "sk-test"),
                           transport=transport)
        results = provider.submit("gpt-4o-mini", "sync", [
            _req({"messages": [{"role": "user", "content": "weather?"}],
                  "tools": [{"type": "function", "function": {"name": "weather"}}]}),
            ItemRequest("itm_2", "c2", "responses", "/v1/responses", {"input": "hello"}),
            ItemRequest("itm_3", "c3", "embeddings", "/v1/embeddings", {"input": "x"})]).results
    finally:
        fake.stop()
    assert results[0].output["tool_calls"][0]["function"]["name"] == "weather"
    assert results[1].output == {"text": "response to hello", "finish_reason": "stop"}
    assert results[1].usage == {"input_tokens": 11, "output_tokens": 5}
    assert results[2].output["embedding"] == [0.1, 0.2, 0.3]


def _sent(fake, transport: str, adapter: str, url: str, model: str, request: ItemRequest):
    """(path, JSON body, auth headers) of the one request a sync submit put on the wire."""
    before = len(fake.stub.requests)
    provider = connect(adapter, Connection(adapter, url, "sk-same"), transport=transport)
    [result] = provider.submit(model, "sync", [request]).results
    [rec] = fake.stub.requests[before:]
    auth = {k: rec.headers.get(k) for k in ("authorization", "x-api-key", "anthropic-version")}
    return rec.path, rec.json, auth, rec.headers["content-type"], result


@pytest.mark.parametrize("adapter", ["openai", "anthropic"])
def test_the_wire_transport_sends_exactly_what_the_sdk_sends(adapter):
    """The thin client (bench/fanout.py's hot path) must keep the SDKs' wire format: same
    path, body, authentication and content type, and the same normalized result."""
    fake = FakeOpenAI() if adapter == "openai" else FakeAnthropic()
    url = fake.url + "/v1" if adapter == "openai" else fake.url
    model = "gpt-4o-mini" if adapter == "openai" else "claude-haiku-4-5"
    request = _req({"messages": [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Hi ✓"}],
                    "max_tokens": 20, "temperature": 0.2})
    try:
        sdk = _sent(fake, "httpx", adapter, url, model, request)
        thin = _sent(fake, "wire", adapter, url, model, request)
    finally:
        fake.stop()
    assert thin[:3] == sdk[:3]
    assert thin[3].startswith("application/json") and sdk[3].startswith("application/json")
    assert (thin[4].ok, thin[4].output, thin[4].usage) == (sdk[4].ok, sdk[4].output, sdk[4].usage)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_transport_classifies_statuses_hints_and_broken_bodies_alike(transport):
    from tests.providers.fakes import RESET
    fake = FakeOpenAI()
    fake.fail_next = [(429, {"error": {"message": "Rate limit"}}, {"retry-after-ms": "20"}),
                      (400, {"error": {"message": "maximum context length is 8 tokens"}}),
                      (200, b'{"id": "chatcmpl-1", "choices": [{"ind'), RESET]
    try:
        provider = connect("openai", Connection("openai", fake.url + "/v1", "sk-test"),
                           concurrency=1, timeout=2.0, transport=transport)
        results = provider.submit("gpt-4o-mini", "sync", [
            ItemRequest(f"itm_{i}", f"c{i}", "responses", "/v1/chat/completions",
                        {"messages": [{"role": "user", "content": "x"}]})
            for i in range(5)]).results
    finally:
        fake.stop()
    errors = [r.error for r in results[:4]]
    assert [e["code"] for e in errors[:3]] == ["rate_limited", "context_too_long",
                                               "malformed_response"]
    assert errors[0]["retry_after"] == 0.02 and errors[0]["retryable"]
    assert not errors[1]["retryable"] and errors[2]["retryable"]
    assert errors[3]["code"] in ("provider_connection_error", "provider_timeout")
    assert errors[3]["retryable"] and results[4].ok


def test_duplicate_custom_ids_never_leave_us():
    provider = connect("openai", Connection("openai", "http://127.0.0.1:9/v1", "sk-test"))
    with pytest.raises(ValueError, match="duplicate custom_id"):
        provider.shards("m", [_req({"messages": []}), _req({"messages": []})])


def test_shards_respect_item_and_byte_limits():
    provider = connect("openai", Connection("openai", "http://127.0.0.1:9/v1", "k" * 10,
                                            max_batch_items=3, max_batch_bytes=10_000))
    requests = [ItemRequest(f"itm_{i}", f"c{i}", "responses", "/v1/chat/completions",
                            {"messages": [{"role": "user", "content": "x" * 3000}]})
                for i in range(7)]
    shards = provider.shards("m", requests)
    assert [count for _url, _data, count in shards] == [3, 3, 1]
    assert all(len(data) <= 10_000 for _u, data, _c in shards)


def test_embedding_shards_hold_at_most_50000_inputs_across_requests():
    provider = connect("openai", Connection("openai", "http://127.0.0.1:9/v1", "k" * 10))
    batch = [f"t{i}" for i in range(20_000)]
    requests = [ItemRequest(f"itm_{i}", f"c{i}", "embeddings", "/v1/embeddings",
                            {"input": batch}) for i in range(3)]
    requests.append(ItemRequest("itm_tokens", "ct", "embeddings", "/v1/embeddings",
                                {"input": [1, 2, 3]}))  # one input given as token ids
    assert [count for _url, _data, count in provider.shards("m", requests)] == [2, 2]


def test_breaker_opens_allows_a_few_probes_and_closes_on_success(redis):
    h = health.Health(redis, health.Policy(min_calls=4, failure_ratio=0.5, cooldown=0.3,
                                           probes=2))
    h.record(("lane-a",), ok=1, failed=1)
    assert h.state("lane-a") == "closed"
    h.record(("lane-a",), ok=0, failed=3)
    assert h.state("lane-a") == "open" and h.allow("lane-a", 10) == 0
    assert h.allow("lane-b", 10) == 10  # other lanes unaffected
    time.sleep(0.35)
    assert h.allow("lane-a", 10) == 2 and h.allow("lane-a", 10) == 0  # only the probes
    h.record(("lane-a",), ok=0, failed=1)  # a probe failed: open again
    assert h.state("lane-a") == "open"
    time.sleep(0.35)
    assert h.allow("lane-a", 1) == 1
    h.record(("lane-a",), ok=1, failed=0)
    assert h.state("lane-a") == "closed" and h.allow("lane-a", 50) == 50
    assert h.recent_errors("lane-a") == []


def test_rate_limits_are_shared_through_redis(redis):
    first, second = health.Health(redis), health.Health(redis)  # two workers
    assert first.take("openai", 40, 100, rpm=60, tpm=0) == 0
    wait = second.take("openai", 40, 100, rpm=60, tpm=0)
    assert 0 < wait <= 60
    assert second.take("openai", 20, 100, rpm=60, tpm=0) == 0  # exactly fills the minute


def test_saved_keys_are_encrypted_and_survive_only_with_the_same_secret():
    token = provider_config.encrypt("secret-one", "sk-live-abcdef1234")
    assert "abcdef" not in token
    assert provider_config.decrypt("secret-one", token) == "sk-live-abcdef1234"
    assert provider_config.decrypt("secret-two", token) is None
