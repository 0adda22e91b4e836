"""OpenAPI paths of the webhook endpoints (SPEC §7), merged into /openapi.json."""
from __future__ import annotations

from batchrouter.api.openapi import _errors, _json_body, _path_id, _resp

ENDPOINT = {"type": "object", "required": ["id", "object", "url", "status"],
            "properties": {"id": {"type": "string"}, "object": {"const": "webhook_endpoint"},
                           "url": {"type": "string"}, "status": {"type": "string"},
                           "secret": {"type": "string", "description": "only when created "
                                      "or rotated"}, "secret_hint": {"type": "string"}}}
DELIVERY = {"type": "object", "required": ["id", "object", "event_id", "status", "attempts"],
            "properties": {"id": {"type": "string"}, "object": {"const": "webhook_delivery"},
                           "event_id": {"type": "string"}, "event_type": {"type": "string"},
                           "status": {"enum": ["pending", "succeeded", "failed"]},
                           "attempts": {"type": "array", "items": {"type": "object"}}}}


def webhook_paths() -> dict:
    filters = [{"name": n, "in": "query", "schema": {"type": "string"}}
               for n in ("endpoint_id", "status", "event_type", "batch_id", "after", "limit")]
    return {
        "/v1/auth/account/delivery-webhook": {
            "get": {"summary": "The workspace default webhook endpoint",
                    "operationId": "getDeliveryWebhook",
                    "responses": {"200": _resp("Endpoint", ENDPOINT), **_errors(401, 403, 404)}},
            "put": {"summary": "Create or replace the default endpoint (secret shown once)",
                    "operationId": "putDeliveryWebhook",
                    "requestBody": _json_body({"url": {"type": "string"},
                                               "secret": {"type": "string"}}, ["url"]),
                    "responses": {"200": _resp("Updated", ENDPOINT),
                                  "201": _resp("Created", ENDPOINT),
                                  **_errors(400, 401, 403, 422)}},
            "delete": {"summary": "Remove the default endpoint",
                       "operationId": "deleteDeliveryWebhook",
                       "responses": {"200": _resp("Deleted"), **_errors(401, 403, 404)}}},
        "/v1/auth/account/delivery-webhook/rotate-secret": {"post": {
            "summary": "Rotate the secret; the old one also signs during the overlap",
            "operationId": "rotateDeliveryWebhookSecret",
            "requestBody": _json_body({"secret": {"type": "string"},
                                       "overlap_seconds": {"type": "integer"}}),
            "responses": {"200": _resp("Rotated", ENDPOINT), **_errors(400, 401, 403, 404, 422)}}},
        "/v1/auth/account/delivery-webhook/test": {"post": {
            "summary": "Send a webhook.test event", "operationId": "testDeliveryWebhook",
            "responses": {"202": _resp("Queued", DELIVERY), **_errors(401, 403, 404, 409)}}},
        "/v1/webhook-deliveries": {"get": {
            "summary": "Delivery log with every attempt (newest first)",
            "operationId": "listWebhookDeliveries", "parameters": filters,
            "responses": {"200": _resp("Deliveries", {"type": "object"}),
                          **_errors(400, 401, 403)}}},
        "/v1/webhook-deliveries/{id}": {"get": {
            "summary": "One delivery with its attempts", "operationId": "getWebhookDelivery",
            "parameters": _path_id("id"),
            "responses": {"200": _resp("Delivery", DELIVERY), **_errors(401, 403, 404)}}},
        "/v1/webhook-deliveries/{id}/redeliver": {"post": {
            "summary": "Send the event again (same webhook-id) as a new delivery",
            "operationId": "redeliverWebhook", "parameters": _path_id("id"),
            "responses": {"202": _resp("Queued", DELIVERY), **_errors(401, 403, 404, 409)}}},
    }
