"""The OpenAPI 3.1 description served at /openapi.json (grows with every endpoint)."""
from __future__ import annotations

ERROR = {"$ref": "#/components/schemas/Error"}


def _resp(description: str, schema: dict | None = None) -> dict:
    body = {"description": description}
    if schema is not None:
        body["content"] = {"application/json": {"schema": schema}}
    return body


def _errors(*codes: int, schema: dict = ERROR) -> dict:
    """Documented error answers; `schema` is the envelope (OpenAI's under /openai/v1)."""
    names = {400: "Bad request", 401: "Missing or invalid API key", 402: "Not enough credits",
             403: "Insufficient scope", 404: "Not found", 409: "Conflict", 413: "Too large",
             415: "Not a multipart upload", 422: "Validation failed",
             429: "Rate limited (see Retry-After)"}
    return {str(c): _resp(names[c], schema) for c in codes}


API_KEY = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, "object": {"const": "api_key"}, "name": {"type": "string"},
        "mode": {"enum": ["live", "test"]},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "display": {"type": "string"}, "prefix": {"type": "string"}, "last4": {"type": "string"},
        "created_at": {"type": "string"}, "expires_at": {"type": ["string", "null"]},
        "last_used_at": {"type": ["string", "null"]}, "revoked": {"type": "boolean"},
        "secret": {"type": "string", "description": "Only in the create response."},
    },
    "required": ["id", "object", "name", "mode", "scopes", "display"],
}


QUOTE_REQUEST = {
    "type": "object",
    "description": "Inline items or an uploaded file, plus manifest-level controls (SPEC §3).",
    "properties": {
        "items": {"type": "array", "items": {"type": "object"}},
        "input_file_id": {"type": "string"},
        "sla_tier": {"enum": ["standard", "flex", "priority"]},
        "routing_mode": {"enum": ["cheapest", "sla_aware", "quality", "hybrid"]},
        "privacy_tier": {"enum": ["standard", "no_training", "zdr"]},
        "allowed_regions": {"type": "array", "items": {"type": "string"}},
        "provider_preferences": {"type": "object", "properties": {
            "only": {"type": "array", "items": {"type": "string"}},
            "ignore": {"type": "array", "items": {"type": "string"}},
            "order": {"type": "array", "items": {"type": "string"}},
            "allow_fallbacks": {"type": "boolean"},
            "data_collection": {"enum": ["allow", "deny"]}, "zdr": {"type": "boolean"}}},
        "max_price": {"type": "object", "properties": {"currency": {"const": "usd"},
                                                       "amount": {"type": "string"}}},
        "metadata": {"type": "object"},
    },
}
QUOTE = {"type": "object", "required": ["id", "object", "expires_at", "pricing_estimate"],
         "properties": {"id": {"type": "string"}, "object": {"const": "quote"},
                        "expires_at": {"type": "string"},
                        "pricing_estimate": {"type": "object"},
                        "quote_lanes": {"type": "object"}, "work_unit_plan": {"type": "array"},
                        "balance": {"type": "object"}, "assumptions": {"type": "object"}}}
FILE = {"type": "object", "required": ["id", "object", "bytes", "status"],
        "properties": {"id": {"type": "string"}, "object": {"const": "file"},
                       "bytes": {"type": "integer"}, "sha256": {"type": "string"},
                       "item_count": {"type": "integer"}, "status": {"enum": ["processed", "error"]},
                       "preflight": {"type": "object"}}}


def _catalog_paths() -> dict:
    public = [{}]
    filters = [{"name": n, "in": "query", "schema": {"type": "string"}}
               for n in ("operation", "provider", "feature")]
    quote_op = {"summary": "Preflight and quote a manifest (a 10-minute price lock)",
                "parameters": [{"name": "Idempotency-Key", "in": "header",
                                "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": QUOTE_REQUEST}}},
                "responses": {"201": _resp("Quote", QUOTE),
                              "400": _resp("Preflight failed (details.preflight[])", ERROR),
                              **_errors(401, 403, 404, 409, 422, 429)}}
    return {
        "/v1/catalog/models": {"get": {
            "summary": "Models with their offerings and list prices (public)",
            "operationId": "listModels", "security": public, "parameters": filters,
            "responses": {"200": _resp("Models", {"type": "object"})}}},
        "/v1/catalog/providers": {"get": {
            "summary": "Providers, credentials present, health (public)",
            "operationId": "listProviders", "security": public,
            "responses": {"200": _resp("Providers", {"type": "object"})}}},
        "/v1/files": {"post": {
            "summary": "Upload a JSONL manifest (multipart, purpose=batch)",
            "operationId": "uploadFile",
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"},
                               "purpose": {"const": "batch"}}}}}},
            "responses": {"201": _resp("Stored and preflighted", FILE),
                          **_errors(400, 401, 403, 429)}}},
        "/v1/files/{id}": {"get": {
            "summary": "A file and its preflight report", "operationId": "getFile",
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": _resp("File", FILE), **_errors(401, 403, 404, 429)}}},
        "/v1/batches/input-manifests": {"post": {
            "summary": "Upload a manifest as raw NDJSON", "operationId": "uploadManifest",
            "parameters": [{"name": "x-batchrouter-item-count", "in": "header",
                            "schema": {"type": "integer"}},
                           {"name": "x-content-sha256", "in": "header",
                            "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/x-ndjson": {
                "schema": {"type": "string"}}}},
            "responses": {"201": _resp("Stored and preflighted", FILE),
                          **_errors(400, 401, 403, 429)}}},
        "/v1/quotes/model": {"post": quote_op | {"operationId": "createQuote"}},
        "/v1/batches/quote": {"post": quote_op | {"operationId": "createQuoteAlias"}},
        "/v1/quotes/{id}": {"get": {
            "summary": "A stored quote", "operationId": "getQuote",
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": _resp("Quote", QUOTE), **_errors(401, 403, 404, 429)}}},
    }


ROLE = {"enum": ["owner", "admin", "member", "viewer"]}
MEMBER = {"type": "object", "required": ["object", "user_id", "email", "role"],
          "properties": {"object": {"const": "member"}, "user_id": {"type": "string"},
                         "email": {"type": "string"}, "name": {"type": ["string", "null"]},
                         "role": ROLE, "joined_at": {"type": "string"}}}
INVITATION = {"type": "object", "required": ["id", "object", "email", "role", "status"],
              "properties": {"id": {"type": "string"}, "object": {"const": "invitation"},
                             "email": {"type": "string"}, "role": ROLE,
                             "status": {"enum": ["pending", "accepted", "revoked", "expired"]},
                             "created_at": {"type": "string"},
                             "expires_at": {"type": "string"}}}
AGENT_REGISTRATION = {
    "type": "object",
    "required": ["object", "org_id", "user_id", "key_id", "api_key", "mode", "scopes"],
    "properties": {
        "object": {"const": "agent_registration"}, "org_id": {"type": "string"},
        "user_id": {"type": "string"}, "key_id": {"type": "string"},
        "api_key": {"type": "string", "description": "The key's secret, shown only here."},
        "mode": {"enum": ["live", "test"]},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "workspace": {"type": "object"}, "email": {"type": ["string", "null"]},
        "email_verification": {"enum": ["sent", "not_requested"]},
        "created_at": {"type": "string"}},
}


def _json_body(properties: dict, required: list[str] | None = None) -> dict:
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"required": bool(required), "content": {"application/json": {"schema": schema}}}


def _path_id(name: str) -> list[dict]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}]


def _team_paths() -> dict:
    member_ops = {
        "patch": {"summary": "Change a member's role (admins; only owners touch the owner role; "
                             "the last owner cannot be demoted)",
                  "operationId": "changeMemberRole", "parameters": _path_id("user_id"),
                  "requestBody": _json_body({"role": ROLE}, ["role"]),
                  "responses": {"200": _resp("Member", MEMBER),
                                **_errors(401, 403, 404, 409, 422, 429)}},
        "delete": {"summary": "Remove a member (removing yourself is leaving)",
                   "operationId": "removeMember", "parameters": _path_id("user_id"),
                   "responses": {"200": _resp("Removed", {"type": "object"}),
                                 **_errors(401, 403, 404, 409, 429)}}}
    return {
        "/v1/auth/agent-register": {"post": {
            "summary": "Create a workspace, its owner and an owner API key in one call (no "
                       "authentication; rate limited per IP). Until the emailed link is opened "
                       "the key is a test key (br_test_).",
            "operationId": "agentRegister", "security": [{}],
            "requestBody": _json_body({"agent_name": {"type": "string"},
                                       "email": {"type": "string", "format": "email"},
                                       "password": {"type": "string"}}),
            "responses": {"201": _resp("Registered; the secret is shown once",
                                       AGENT_REGISTRATION),
                          **_errors(400, 409, 422, 429)}}},
        "/v1/workspace": {"patch": {
            "summary": "Rename the workspace (owners and admins)",
            "operationId": "renameWorkspace",
            "requestBody": _json_body({"name": {"type": "string"}}, ["name"]),
            "responses": {"200": _resp("Workspace", {"type": "object"}),
                          **_errors(401, 403, 422, 429)}}},
        "/v1/workspace/members": {"get": {
            "summary": "Members and their roles", "operationId": "listMembers",
            "responses": {"200": _resp("Members", {"type": "object"}),
                          **_errors(401, 403, 429)}}},
        "/v1/workspace/members/{user_id}": member_ops,
        "/v1/workspace/transfer-ownership": {"post": {
            "summary": "Make another member the owner; the calling owner becomes an admin",
            "operationId": "transferOwnership",
            "requestBody": _json_body({"user_id": {"type": "string"}}, ["user_id"]),
            "responses": {"200": _resp("The new owner", MEMBER),
                          **_errors(401, 403, 404, 422, 429)}}},
        "/v1/workspace/invitations": {
            "get": {"summary": "Pending invitations", "operationId": "listInvitations",
                    "responses": {"200": _resp("Invitations", {"type": "object"}),
                                  **_errors(401, 403, 429)}},
            "post": {"summary": "Email an expiring, single-use invitation link",
                     "operationId": "createInvitation",
                     "parameters": [{"name": "Idempotency-Key", "in": "header",
                                     "schema": {"type": "string"}}],
                     "requestBody": _json_body({"email": {"type": "string", "format": "email"},
                                                "role": ROLE}, ["email"]),
                     "responses": {"201": _resp("Invitation", INVITATION),
                                   **_errors(401, 403, 409, 422, 429)}}},
        "/v1/workspace/invitations/{id}": {"delete": {
            "summary": "Withdraw an invitation", "operationId": "revokeInvitation",
            "parameters": _path_id("id"),
            "responses": {"200": _resp("Invitation", INVITATION),
                          **_errors(401, 403, 404, 429)}}},
        "/v1/workspace/security-events": {"get": {
            "summary": "The workspace's security log, newest first (owners and admins)",
            "operationId": "listSecurityEvents",
            "parameters": [{"name": "before", "in": "query", "schema": {"type": "string"}},
                           {"name": "limit", "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 200}}],
            "responses": {"200": _resp("Events", {"type": "object"}),
                          **_errors(400, 401, 403, 429)}}},
    }


BATCH = {"type": "object", "required": ["id", "object", "status", "counts"],
         "properties": {"id": {"type": "string"}, "object": {"const": "batch"},
                        "status": {"enum": ["pending", "queued", "routing", "dispatched",
                                            "processing", "completing", "completed", "failed",
                                            "cancelled", "expired", "cancelling"]},
                        "counts": {"type": "object"}, "cost_usd": {"type": "object"},
                        "results_file_id": {"type": ["string", "null"]},
                        "errors_file_id": {"type": ["string", "null"]}}}


def _id(name: str = "id") -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _batch_paths() -> dict:
    page = [{"name": "limit", "in": "query", "schema": {"type": "integer"}},
            {"name": "status", "in": "query", "schema": {"type": "string"}}]
    obj = {"type": "object"}
    return {
        "/v1/batches": {
            "post": {"summary": "Create a batch from a quote (reserves credits)",
                     "operationId": "createBatch",
                     "parameters": [{"name": "Idempotency-Key", "in": "header",
                                     "schema": {"type": "string"}}],
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"type": "object", "required": ["quote_id"], "properties": {
                             "quote_id": {"type": "string"},
                             "items": {"type": "array", "items": obj},
                             "input_file_id": {"type": "string"}, "metadata": obj,
                             "webhook": obj}}}}},
                     "responses": {"201": _resp("Batch", BATCH),
                                   "402": _resp("insufficient_credits", ERROR),
                                   **_errors(400, 401, 403, 404, 409, 422, 429)}},
            "get": {"summary": "List batches (newest first, `after` cursor)",
                    "operationId": "listBatches",
                    "parameters": page + [{"name": "after", "in": "query",
                                           "schema": {"type": "string"}}],
                    "responses": {"200": _resp("Batches", obj), **_errors(400, 401, 403, 429)}}},
        "/v1/batches/{id}": {"get": {
            "summary": "Poll a batch", "operationId": "getBatch",
            "parameters": [_id(), {"name": "include_billing_receipt", "in": "query",
                                   "schema": {"type": "boolean"}}],
            "responses": {"200": _resp("Batch", BATCH), **_errors(401, 403, 404, 429)}}},
        "/v1/batches/{id}/cancel": {"post": {
            "summary": "Cancel: deliver what finished, release the rest",
            "operationId": "cancelBatch", "parameters": [_id()],
            "responses": {"200": _resp("Batch", BATCH), **_errors(401, 403, 404, 409, 429)}}},
        "/v1/batches/{id}/results": {"get": {
            "summary": "Per-item rows, cursor paged", "operationId": "batchResults",
            "parameters": [_id(), {"name": "cursor", "in": "query",
                                   "schema": {"type": "string"}}] + page,
            "responses": {"200": _resp("Rows", obj), **_errors(400, 401, 403, 404, 429)}}},
        "/v1/batches/{id}/artifact-url": {"get": {
            "summary": "Signed, expiring URLs of the results and errors files",
            "operationId": "artifactUrls", "parameters": [_id()],
            "responses": {"200": _resp("URLs", obj), **_errors(401, 403, 404, 429)}}},
        "/v1/batches/{id}/receipt": {"get": {
            "summary": "Route receipt: every attempt of every item (paged)",
            "operationId": "routeReceipt",
            "parameters": [_id(), {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": _resp("Receipt", obj), **_errors(400, 401, 403, 404, 429)}}},
        "/v1/batches/{id}/billing-receipt": {"get": {
            "summary": "Quoted vs settled, subtotal, fee, lanes, saving",
            "operationId": "billingReceipt", "parameters": [_id()],
            "responses": {"200": _resp("Receipt", obj), **_errors(401, 403, 404, 429)}}},
        "/v1/batches/{id}/items/{customer_item_id}/feedback": {"post": {
            "summary": "Rate an item's result (score 1–5)", "operationId": "itemFeedback",
            "parameters": [_id(), _id("customer_item_id")],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["score"],
                "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5},
                               "label": {"type": "string"}, "note": {"type": "string"}}}}}},
            "responses": {"201": _resp("Feedback", obj), **_errors(401, 403, 404, 422, 429)}}},
        "/v1/files/download/{token}": {"get": {
            "summary": "Download a result file with a signed link (no key needed)",
            "operationId": "downloadFile", "security": [{}], "parameters": [_id("token")],
            "responses": {"200": {"description": "JSONL file"},
                          "403": _resp("Invalid or expired link", ERROR)}}},
    }


def _billing_paths() -> dict:
    from batchrouter.api.billing import openapi_paths

    return openapi_paths(_resp, _errors, ERROR)


def build_spec(base_url: str) -> dict:
    """The spec document; `base_url` becomes the server entry."""
    from batchrouter.api.openapi_openai import openai_paths as _openai_paths
    from batchrouter.api.openapi_webhooks import webhook_paths as _webhook_paths

    spec = {
        "openapi": "3.1.0",
        "info": {"title": "BatchRouter API", "version": "1.0.0",
                 "description": "Quote, route and run batch LLM work across providers."},
        "servers": [{"url": base_url}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "br_live_… or br_test_… key"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                   "details": {}, "error_reference": {"type": "string"}}}}},
                "ApiKey": API_KEY,
            },
        },
        "paths": {
            "/v1/auth/account": {"get": {
                "summary": "The caller's account, workspace, role and balances",
                "operationId": "getAccount",
                "responses": {"200": _resp("Account", {"type": "object"}),
                              **_errors(401, 403, 429)}}},
            "/v1/auth/account/api-keys": {
                "get": {"summary": "List API keys", "operationId": "listApiKeys",
                        "responses": {"200": _resp("Keys", {"type": "object"}),
                                      **_errors(401, 403, 429)}},
                "post": {"summary": "Create an API key (secret shown once)",
                         "operationId": "createApiKey",
                         "parameters": [{"name": "Idempotency-Key", "in": "header",
                                         "schema": {"type": "string"}}],
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"type": "object", "required": ["name"], "properties": {
                                 "name": {"type": "string"},
                                 "scopes": {"type": "array", "items": {"type": "string"}},
                                 "mode": {"enum": ["live", "test"]},
                                 "expires_at": {"type": "string", "format": "date-time"}}}}}},
                         "responses": {"201": _resp("Created",
                                                    {"$ref": "#/components/schemas/ApiKey"}),
                                       **_errors(400, 401, 403, 409, 422, 429)}}},
            "/v1/auth/account/api-keys/{id}": {"delete": {
                "summary": "Revoke an API key", "operationId": "revokeApiKey",
                "parameters": [{"name": "id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": _resp("Revoked", {"$ref": "#/components/schemas/ApiKey"}),
                              **_errors(401, 403, 404, 429)}}},
            **_catalog_paths(),
            **_billing_paths(),
            **_batch_paths(),
            **_team_paths(),
            **_webhook_paths(),
            **_openai_paths(),
        },
    }
    _document_common_errors(spec["paths"])
    return spec


def _document_common_errors(paths: dict) -> None:
    """Answers every operation can give, so each one documents them (the fuzz test holds us to
    it): a body that is not the JSON object asked for (400) or fails validation (422)."""
    for operations in paths.values():
        for operation in operations.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                responses = operation["responses"]
                for status in (400, 422):
                    responses.setdefault(str(status), _errors(status)[str(status)])
