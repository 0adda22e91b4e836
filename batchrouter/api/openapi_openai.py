"""OpenAPI paths of the OpenAI-compatible Files + Batches surface (SPEC §6), merged into
/openapi.json. Bodies and errors are OpenAI's (api/openai_errors.py), not ours."""
from __future__ import annotations

from batchrouter.api import openapi
from batchrouter.api.openapi import _json_body, _path_id, _resp

PREFIX = "/openai/v1"
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "code"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
FILE = {"type": "object", "required": ["id", "object", "bytes", "created_at", "filename",
                                       "purpose", "status"],
        "properties": {"id": {"type": "string"}, "object": {"const": "file"},
                       "bytes": {"type": "integer"}, "created_at": {"type": "integer"},
                       "filename": {"type": "string"}, "purpose": {"type": "string"},
                       "status": {"enum": ["processed", "error"]},
                       "status_details": {"type": ["string", "null"]},
                       "batchrouter": {"type": "object", "description": "Our preflight report."}}}
DELETED = {"type": "object", "required": ["id", "object", "deleted"],
           "properties": {"id": {"type": "string"}, "object": {"const": "file"},
                          "deleted": {"type": "boolean"}}}
BATCH = {"type": "object", "required": ["id", "object", "endpoint", "input_file_id",
                                        "completion_window", "status", "created_at",
                                        "request_counts"],
         "properties": {"id": {"type": "string"}, "object": {"const": "batch"},
                        "endpoint": {"type": "string"}, "input_file_id": {"type": "string"},
                        "completion_window": {"type": "string"},
                        "status": {"enum": ["validating", "failed", "in_progress", "finalizing",
                                            "completed", "expired", "cancelling",
                                            "cancelled"]},
                        "output_file_id": {"type": ["string", "null"]},
                        "error_file_id": {"type": ["string", "null"]},
                        "created_at": {"type": "integer"},
                        "request_counts": {"type": "object"},
                        "metadata": {"type": ["object", "null"]},
                        "batchrouter": {"type": "object",
                                        "description": "Quote, lanes and cost so far."}}}


def _page(item: dict) -> dict:
    return {"type": "object", "required": ["object", "data", "has_more"],
            "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": item},
                           "first_id": {"type": ["string", "null"]},
                           "last_id": {"type": ["string", "null"]},
                           "has_more": {"type": "boolean"}}}


def _errors(*codes: int) -> dict:
    return openapi._errors(*codes, schema=ERROR)


def _query(*names: str) -> list[dict]:
    return [{"name": n, "in": "query", "schema": {"type": "string"}} for n in names]


def openai_paths() -> dict:
    upload = {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file", "purpose"],
        "properties": {"file": {"type": "string", "format": "binary"},
                       "purpose": {"const": "batch"}}}}}}
    return {
        f"{PREFIX}/files": {
            "post": {"summary": "Upload a .jsonl batch input (OpenAI Files API)",
                     "operationId": "openaiUploadFile", "requestBody": upload,
                     "responses": {"200": _resp("File", FILE),
                                   **_errors(400, 401, 403, 409, 413, 415, 422, 429)}},
            "get": {"summary": "Uploads and result files, newest first",
                    "operationId": "openaiListFiles",
                    "parameters": _query("purpose", "after", "limit", "order"),
                    "responses": {"200": _resp("Files", _page(FILE)),
                                  **_errors(400, 401, 403, 429)}}},
        f"{PREFIX}/files/{{file_id}}": {
            "get": {"summary": "One file's metadata", "operationId": "openaiGetFile",
                    "parameters": _path_id("file_id"),
                    "responses": {"200": _resp("File", FILE), **_errors(401, 403, 404, 429)}},
            "delete": {"summary": "Delete a file (batches made from it keep running)",
                       "operationId": "openaiDeleteFile", "parameters": _path_id("file_id"),
                       "responses": {"200": _resp("Deleted", DELETED),
                                     **_errors(401, 403, 404, 409, 429)}}},
        f"{PREFIX}/files/{{file_id}}/content": {"get": {
            "summary": "The file's bytes (input, output or error JSONL)",
            "operationId": "openaiFileContent", "parameters": _path_id("file_id"),
            "responses": {"200": {"description": "JSONL bytes", "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}},
                **_errors(401, 403, 404, 429)}}},
        f"{PREFIX}/batches": {
            "post": {"summary": "Create a batch from an uploaded file (OpenAI Batches API): "
                               "quoted, credits reserved, started",
                     "operationId": "openaiCreateBatch",
                     "requestBody": _json_body({
                         "input_file_id": {"type": "string"},
                         "endpoint": {"enum": ["/v1/chat/completions", "/v1/responses",
                                               "/v1/embeddings"]},
                         "completion_window": {"const": "24h"},
                         "metadata": {"type": ["object", "null"]}},
                         ["input_file_id", "endpoint", "completion_window"]),
                     "responses": {"200": _resp("Batch", BATCH),
                                   **_errors(400, 401, 402, 403, 404, 409, 422, 429)}},
            "get": {"summary": "Batches, newest first", "operationId": "openaiListBatches",
                    "parameters": _query("after", "limit"),
                    "responses": {"200": _resp("Batches", _page(BATCH)),
                                  **_errors(400, 401, 403, 429)}}},
        f"{PREFIX}/batches/{{batch_id}}": {"get": {
            "summary": "Poll a batch", "operationId": "openaiGetBatch",
            "parameters": _path_id("batch_id"),
            "responses": {"200": _resp("Batch", BATCH), **_errors(401, 403, 404, 429)}}},
        f"{PREFIX}/batches/{{batch_id}}/cancel": {"post": {
            "summary": "Cancel: `cancelling`, then `cancelled` with what finished",
            "operationId": "openaiCancelBatch", "parameters": _path_id("batch_id"),
            "responses": {"200": _resp("Batch", BATCH), **_errors(401, 403, 404, 409, 429)}}},
    }
