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
        },
    }
