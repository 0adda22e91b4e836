"""Preflight through the API a user calls (SPEC §3, §6): one test per stable code.

Inline items go to POST /v1/quotes/model; raw bytes (BOM, NUL, CRLF, bad UTF-8, bad JSON) go
to POST /v1/batches/input-manifests or POST /v1/files and are then quoted by input_file_id.
"""
from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select

from batchrouter import ledger, manifest
from batchrouter.models import Quote
from tests.factories import bearer, read, workspace_of
from tests.quote.helpers import (
    QUOTE,
    chat,
    embed,
    file_problems,
    jsonl,
    only_problem,
    openai_line,
    preflight_problems,
    quote,
    upload_multipart,
    upload_raw,
)


def upload_ok(client, secret, data: bytes, headers=None) -> dict:
    response = upload_raw(client, secret, data, headers)
    assert response.status_code == 201, response.get_data(as_text=True)[:800]
    body = response.get_json()
    assert body["status"] == "processed", body
    assert body["preflight"] == {"ok": True, "error_count": 0, "errors": []}
    return body


def quote_file(client, secret, file_id: str, **controls):
    return client.post(QUOTE, headers=bearer(secret),
                       json={"input_file_id": file_id, **controls})


def codes(problems) -> list:
    return [(p["line"], p["code"]) for p in problems]


# --- JSON, blank lines, encodings ----------------------------------------------------------

def test_invalid_json_on_line_3_and_a_truncated_last_line(client, secret):
    data = (jsonl(chat("a"), chat("b")) + b'{"customer_item_id": "c", oops}\n'
            + jsonl(chat("d")) + b'{"customer_item_id": "e", "operation": "respon')
    upload = upload_raw(client, secret, data)
    errors = file_problems(upload)
    assert codes(errors) == [(3, "invalid_json"), (5, "invalid_json")]
    # Quoting the stored file gives the same line-level report as a 400.
    problems = preflight_problems(quote_file(client, secret, upload.get_json()["id"]))
    assert codes(problems) == [(3, "invalid_json"), (5, "invalid_json")]


def test_blank_line_inside_is_reported_with_its_line(client, secret):
    data = jsonl(chat("a")) + b"\n" + jsonl(chat("b")) + b"   \n" + jsonl(chat("c"))
    errors = file_problems(upload_raw(client, secret, data))
    assert codes(errors) == [(2, "blank_line"), (4, "blank_line")]


def test_trailing_newline_and_trailing_blank_lines_are_fine(client, secret):
    body = upload_ok(client, secret, jsonl(chat("a"), chat("b")) + b"\n\n  \n")
    assert body["item_count"] == 2
    response = quote_file(client, secret, body["id"])
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["item_count"] == 2


def test_no_final_newline_is_fine(client, secret):
    body = upload_ok(client, secret, jsonl(chat("a")) + jsonl(chat("b")).rstrip(b"\n"))
    assert body["item_count"] == 2


def test_utf8_bom_at_the_start_is_tolerated(client, secret):
    body = upload_ok(client, secret, b"\xef\xbb\xbf" + jsonl(chat("a"), chat("b")))
    assert body["item_count"] == 2
    response = quote_file(client, secret, body["id"])
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["item_count"] == 2


def test_nul_byte_is_rejected(client, secret):
    bad = jsonl(chat("b")).replace(b"Hello", b"Hel\x00lo")
    errors = file_problems(upload_raw(client, secret, jsonl(chat("a")) + bad))
    assert codes(errors) == [(2, "nul_byte")]


def test_crlf_line_endings_are_tolerated(client, secret):
    data = jsonl(chat("a"), chat("b"), embed("c")).replace(b"\n", b"\r\n")
    body = upload_ok(client, secret, data)
    assert body["item_count"] == 3
    assert (body["bytes"], body["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    response = quote_file(client, secret, body["id"])
    assert response.status_code == 201, response.get_json()


def test_invalid_utf8_is_rejected(client, secret):
    data = jsonl(chat("a")) + b"\xff\xfe" + jsonl(chat("b"))
    errors = file_problems(upload_raw(client, secret, data))
    assert codes(errors) == [(2, "invalid_utf8")]


def test_invalid_utf8_inside_a_string_value_is_rejected(client, secret):
    bad = jsonl(chat("b")).replace(b"Hello", b"Hel\xc3\x28lo")
    response = upload_raw(client, secret, jsonl(chat("a")) + bad)
    errors = file_problems(response)
    assert codes(errors) == [(2, "invalid_utf8")]


# --- customer_item_id ---------------------------------------------------------------------

def test_duplicate_customer_item_id(client, secret):
    problem = only_problem(quote(client, secret, [chat("a"), chat("b"), chat("a")]))
    assert (problem["line"], problem["code"], problem["customer_item_id"]) == \
        (3, "duplicate_customer_item_id", "a")


def test_duplicate_across_native_and_openai_lines(client, secret):
    problem = only_problem(quote(client, secret, [chat("same"), openai_line("same")]))
    assert (problem["line"], problem["code"]) == (2, "duplicate_customer_item_id")


@pytest.mark.parametrize("item_id", [None, ""], ids=["absent", "empty"])
def test_missing_customer_item_id(client, secret, item_id):
    item = chat("x")
    if item_id is None:
        del item["customer_item_id"]
    else:
        item["customer_item_id"] = item_id
    problem = only_problem(quote(client, secret, [chat("a"), item]))
    assert (problem["line"], problem["code"]) == (2, "missing_customer_item_id")


def test_missing_custom_id_on_an_openai_line(client, secret):
    line = openai_line("x")
    del line["custom_id"]
    problem = only_problem(quote(client, secret, [line]))
    assert (problem["line"], problem["code"]) == (1, "missing_customer_item_id")


def test_invalid_customer_item_id_129_chars(client, secret):
    problem = only_problem(quote(client, secret, [chat("a"), chat("x" * 129)]))
    assert (problem["line"], problem["code"]) == (2, "invalid_customer_item_id")


def test_customer_item_id_of_128_chars_is_accepted(client, secret):
    response = quote(client, secret, [chat("x" * 128)])
    assert response.status_code == 201, response.get_json()


def test_non_string_customer_item_id_is_invalid(client, secret):
    item = chat("a")
    item["customer_item_id"] = 42
    problem = only_problem(quote(client, secret, [item]))
    assert problem["code"] == "invalid_customer_item_id"


# --- operation, model, input ---------------------------------------------------------------

def test_unknown_operation(client, secret):
    item = chat("b")
    item["operation"] = "completions"
    problem = only_problem(quote(client, secret, [chat("a"), item]))
    assert (problem["line"], problem["code"], problem["customer_item_id"]) == \
        (2, "unknown_operation", "b")


def test_unknown_model(client, secret):
    problem = only_problem(quote(client, secret, [chat("a", model="gpt-9-ultra")]))
    assert (problem["line"], problem["code"], problem["customer_item_id"]) == \
        (1, "unknown_model", "a")


def test_unknown_model_inside_a_models_list(client, secret):
    item = chat("a")
    del item["model"]
    item["models"] = ["sandbox-chat", "nope-model"]
    problem = only_problem(quote(client, secret, [item]))
    assert problem["code"] == "unknown_model"


def test_unknown_model_on_an_openai_line(client, secret):
    problem = only_problem(quote(client, secret, [openai_line("a", model="nope")]))
    assert (problem["code"], problem["customer_item_id"]) == ("unknown_model", "a")


def test_model_operation_mismatch_embeddings_on_a_chat_model(client, secret):
    problem = only_problem(quote(client, secret, [embed("e", model="sandbox-chat")]))
    assert (problem["line"], problem["code"], problem["customer_item_id"]) == \
        (1, "model_operation_mismatch", "e")


def test_model_operation_mismatch_chat_on_an_embeddings_model(client, secret):
    problem = only_problem(quote(client, secret, [chat("c", model="sandbox-embed")]))
    assert problem["code"] == "model_operation_mismatch"


def test_vision_input_on_a_model_without_vision(client, secret):
    image = {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                         {"type": "image_url", "image_url": {"url": "x"}}]}
    item = chat("v", model="claude-3-5-haiku")
    item["input"]["messages"] = [image]
    problem = only_problem(quote(client, secret, [item]))
    assert (problem["code"], problem["customer_item_id"]) == ("model_operation_mismatch", "v")
    item["model"] = "sandbox-chat"
    assert quote(client, secret, [item]).status_code == 201


def test_model_operation_mismatch_on_an_openai_embeddings_line(client, secret):
    line = openai_line("e", model="gpt-4o-mini", url="/v1/embeddings")
    problem = only_problem(quote(client, secret, [line]))
    assert problem["code"] == "model_operation_mismatch"


def _no_messages(item):
    del item["input"]["messages"]


def _empty_messages(item):
    item["input"]["messages"] = []


def _no_input(item):
    del item["input"]


@pytest.mark.parametrize("breaker", [_no_messages, _empty_messages, _no_input],
                         ids=["messages-missing", "messages-empty", "input-missing"])
def test_invalid_input_for_responses(client, secret, breaker):
    item = chat("a")
    breaker(item)
    problem = only_problem(quote(client, secret, [chat("ok"), item]))
    assert (problem["line"], problem["code"]) == (2, "invalid_input")


@pytest.mark.parametrize("value", [42, ["fine", 7], "", [], {"text": "x"}],
                         ids=["int", "list-with-int", "empty-string", "empty-list", "object"])
def test_invalid_input_for_embeddings(client, secret, value):
    problem = only_problem(quote(client, secret, [embed("e", text=value)]))
    assert (problem["line"], problem["code"]) == (1, "invalid_input")


def test_embeddings_input_as_list_of_strings_is_accepted(client, secret):
    response = quote(client, secret, [embed("e", text=["one", "two"])])
    assert response.status_code == 201, response.get_json()


def test_invalid_input_nonpositive_max_output_tokens(client, secret):
    problem = only_problem(quote(client, secret, [chat("a", max_output_tokens=0)]))
    assert problem["code"] == "invalid_input"


# --- OpenAI Batch line shape ---------------------------------------------------------------

def test_invalid_method_on_an_openai_line(client, secret):
    items = [openai_line("a"), openai_line("b", method="GET")]
    problem = only_problem(quote(client, secret, items))
    assert (problem["line"], problem["code"], problem["customer_item_id"]) == \
        (2, "invalid_method", "b")


@pytest.mark.parametrize("url", ["/v1/completions", "/v1/chat/completions/", 7])
def test_unsupported_url_on_an_openai_line(client, secret, url):
    problem = only_problem(quote(client, secret, [openai_line("a", url=url)]))
    assert (problem["line"], problem["code"], problem["customer_item_id"]) == \
        (1, "unsupported_url", "a")


def test_openai_line_without_body_model_is_invalid_input(client, secret):
    line = openai_line("a")
    del line["body"]["model"]
    problem = only_problem(quote(client, secret, [line]))
    assert problem["code"] == "invalid_input"


# --- limits --------------------------------------------------------------------------------

@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_MAX_ITEM_BYTES": 300}], indirect=True)
def test_line_too_large(client, secret):
    problems = preflight_problems(quote(client, secret, [chat("small"),
                                                         chat("big", content="x" * 400),
                                                         chat("small2")]))
    assert codes(problems) == [(2, "line_too_large")]
    assert "300" in problems[0]["message"]


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_MAX_ITEM_BYTES": 300}], indirect=True)
def test_line_too_large_in_an_upload(client, secret):
    data = jsonl(chat("a"), chat("b", content="y" * 500))
    errors = file_problems(upload_raw(client, secret, data))
    assert codes(errors) == [(2, "line_too_large")]


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_MAX_ITEMS": 2}], indirect=True)
def test_too_many_items(client, secret):
    problems = preflight_problems(quote(client, secret, [chat(f"i{n}") for n in range(5)]))
    assert codes(problems) == [(3, "too_many_items")]  # reported once, at the first extra
    assert quote(client, secret, [chat("a"), chat("b")]).status_code == 201


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_MAX_MANIFEST_BYTES": 500}],
                         indirect=True)
def test_manifest_too_large(client, secret):
    problems = preflight_problems(quote(client, secret, [chat(f"i{n}") for n in range(6)]))
    assert [p["code"] for p in problems] == ["manifest_too_large"]
    assert problems[0]["line"] is None
    assert quote(client, secret, [chat("a")]).status_code == 201


@pytest.mark.parametrize("app_overrides", [{"BATCHROUTER_MAX_MANIFEST_BYTES": 500}],
                         indirect=True)
def test_manifest_too_large_in_an_upload(client, secret):
    errors = file_problems(upload_raw(client, secret, jsonl(*[chat(f"i{n}") for n in range(30)])))
    assert [e["code"] for e in errors] == ["manifest_too_large"]


# --- declared headers (input-manifests) ----------------------------------------------------

def test_item_count_mismatch(client, secret):
    data = jsonl(chat("a"), chat("b"))
    errors = file_problems(upload_raw(client, secret, data, {"x-batchrouter-item-count": "3"}))
    assert [e["code"] for e in errors] == ["item_count_mismatch"]
    assert upload_ok(client, secret, data, {"x-batchrouter-item-count": "2"})["item_count"] == 2


def test_content_sha256_mismatch(client, secret):
    data = jsonl(chat("a"), chat("b"))
    wrong = hashlib.sha256(data + b" ").hexdigest()
    errors = file_problems(upload_raw(client, secret, data, {"x-content-sha256": wrong}))
    assert [e["code"] for e in errors] == ["content_sha256_mismatch"]
    right = hashlib.sha256(data).hexdigest()
    body = upload_ok(client, secret, data, {"x-content-sha256": right.upper()})
    assert body["sha256"] == right


# --- empty ---------------------------------------------------------------------------------

def test_empty_manifest_inline(client, secret):
    problem = only_problem(quote(client, secret, []))
    assert (problem["line"], problem["code"]) == (None, "empty_manifest")


@pytest.mark.parametrize("data", [b"", b"\n\n"], ids=["no-bytes", "only-newlines"])
def test_empty_manifest_upload(client, secret, data):
    errors = file_problems(upload_raw(client, secret, data))
    assert [e["code"] for e in errors] == ["empty_manifest"]


def test_multipart_upload_reports_preflight_errors(client, secret):
    data = jsonl(chat("a"), chat("a"))
    response = upload_multipart(client, secret, data)
    errors = file_problems(response)
    assert codes(errors) == [(2, "duplicate_customer_item_id")]


# --- the report as a whole -----------------------------------------------------------------

def test_report_lists_all_problems(client, secret):
    no_id = chat("x")
    del no_id["customer_item_id"]
    bad_op = chat("op")
    bad_op["operation"] = "chat"
    items = [chat("a"), chat("a"), chat("m", model="nope"), bad_op, no_id,
             embed("e", model="sandbox-chat"), openai_line("g", method="GET"), chat("ok")]
    response = quote(client, secret, items)
    problems = preflight_problems(response)
    assert codes(problems) == [(2, "duplicate_customer_item_id"), (3, "unknown_model"),
                               (4, "unknown_operation"), (5, "missing_customer_item_id"),
                               (6, "model_operation_mismatch"), (7, "invalid_method")]
    details = response.get_json()["error"]["details"]
    assert details["error_count"] == 6
    assert details["item_count"] == 8
    assert details["truncated"] is False


def test_report_is_capped_with_an_accurate_error_count(client, secret):
    n = manifest.ERROR_CAP + 7
    response = quote(client, secret, [chat(f"i{k}", model="nope") for k in range(n)])
    problems = preflight_problems(response)
    details = response.get_json()["error"]["details"]
    assert len(problems) == manifest.ERROR_CAP
    assert details["error_count"] == n
    assert details["truncated"] is True
    assert problems[0]["line"] == 1 and problems[-1]["line"] == manifest.ERROR_CAP
    assert str(n) in response.get_json()["error"]["message"]


def test_upload_report_keeps_the_true_error_count(client, secret):
    n = 150
    response = upload_raw(client, secret, jsonl(*[chat(f"i{k}", model="nope") for k in range(n)]))
    errors = file_problems(response)
    body = response.get_json()
    assert body["preflight"]["error_count"] == n
    assert 1 <= len(errors) < n


def test_nothing_is_reserved_when_preflight_fails(client, secret, db, owner):
    workspace = read(db, lambda s: workspace_of(s, owner))
    before = read(db, lambda s: ledger.balances(s, workspace))
    assert before.available == 5_000_000  # starter credits
    response = quote(client, secret, [chat("a"), chat("a")])
    preflight_problems(response)
    assert "nothing was reserved" in response.get_json()["error"]["message"]
    assert read(db, lambda s: ledger.balances(s, workspace)) == before
    assert read(db, lambda s: s.scalar(select(func.count()).select_from(Quote))) == 0
    account = client.get("/v1/auth/account", headers=bearer(secret)).get_json()
    assert account["credit_balance"] == "5.000000" and account["reserved"] == "0.000000"


def test_a_successful_quote_reserves_nothing_either(client, secret, db, owner):
    workspace = read(db, lambda s: workspace_of(s, owner))
    before = read(db, lambda s: ledger.balances(s, workspace))
    assert quote(client, secret, [chat("a")]).status_code == 201
    assert read(db, lambda s: ledger.balances(s, workspace)) == before
    assert read(db, lambda s: s.scalar(select(func.count()).select_from(Quote))) == 1


# --- shapes that must be accepted ----------------------------------------------------------

def test_mixed_native_and_openai_lines_and_several_models_in_one_file(client, secret):
    data = jsonl(chat("n1"), openai_line("o1"),
                 openai_line("o2", url="/v1/responses", model="sandbox-chat"),
                 openai_line("o3", url="/v1/embeddings", model="sandbox-embed"),
                 embed("n2"), {"custom_id": "o4", "method": "POST", "url": "/v1/responses",
                               "body": {"model": "sandbox-chat", "input": "plain text input"}})
    body = upload_ok(client, secret, data)
    assert body["item_count"] == 6
    response = quote_file(client, secret, body["id"])
    assert response.status_code == 201, response.get_json()
    result = response.get_json()
    assert result["item_count"] == 6
    assert result["input_file_id"] == body["id"]
    models = {lane["model"]: lane["selected_items"] for lane in result["quote_lanes"]["selected"]}
    assert models == {"sandbox-chat": 4, "sandbox-embed": 2}


def test_mixed_shapes_inline(client, secret):
    response = quote(client, secret, [chat("n1"), openai_line("o1"), embed("n2"),
                                      openai_line("o2", url="/v1/embeddings",
                                                  model="sandbox-embed")])
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["item_count"] == 4
