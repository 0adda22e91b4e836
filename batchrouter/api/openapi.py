"""The OpenAPI 3.1 description served at /openapi.json (grows with every endpoint)."""
from __future__ import annotations

ERROR = {"$ref": "#/components/schemas/Error"}


def _resp(description: str, schema: dict | None = None) -> dict:
    body = {"description": description}
    if schema is not None:
        body["content"] = {"application/json": {"schema": schema}}
    return body


def _errors(*codes: int) -> dict:
    names = {400: "Bad request", 401: "Missing or invalid API key", 403: "Insufficient scope",
             404: "Not found", 409: "Conflict", 422: "Validation failed",
             429: "Rate limited (see Retry-After)"}
    return {str(c): _resp(names[c], ERROR) for c in codes}


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


def build_spec(base_url: str) -> dict:
    """The spec document; `base_url` becomes the server entry."""
    return {
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
        },
    }
