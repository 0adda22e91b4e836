"""Shared helpers for lifecycle tests: manifests, quote+create through the API."""
from __future__ import annotations

from tests.factories import bearer


def chat_items(n: int, model: str = "sandbox-chat", prefix: str = "item", **input_extra):
    return [{"customer_item_id": f"{prefix}-{i}", "operation": "responses", "model": model,
             "input": {"messages": [{"role": "user", "content": f"Question number {i}?"}],
                       **input_extra}} for i in range(n)]


def quote(client, secret, items, **controls):
    response = client.post("/v1/quotes/model", json={"items": items, **controls},
                           headers=bearer(secret))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def create(client, secret, items, quote_id, **extra):
    return client.post("/v1/batches", json={"quote_id": quote_id, "items": items, **extra},
                       headers=bearer(secret))


def quote_and_create(client, secret, items, **controls):
    q = quote(client, secret, items, **controls)
    response = create(client, secret, items, q["id"])
    assert response.status_code == 201, response.get_json()
    return q, response.get_json()
