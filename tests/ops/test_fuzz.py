"""Fuzz the public API from its own OpenAPI document (schemathesis): no 5xx, and every
response matches the documented status codes, content types and schemas."""
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks as openapi_checks

from batchrouter.api.openapi import build_spec
from tests.factories import make_key, make_user

EXAMPLES = 15


@schemathesis.check
def no_unplanned_server_error(ctx, response, case):
    """Never a 500; another 5xx only where the operation documents it (502 when an upstream
    such as Stripe fails, 503 when the installation has not configured it)."""
    status = response.status_code
    documented = case.operation.definition.raw.get("responses", {})
    if status == 500 or (status > 500 and str(status) not in documented):
        raise AssertionError(f"server error {status}: {response.text[:300]}")


CHECKS = [no_unplanned_server_error, openapi_checks.status_code_conformance,
          openapi_checks.content_type_conformance, openapi_checks.response_schema_conformance]

@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx, value):
    """Manifest uploads: one JSON value a line (an array becomes its lines)."""
    import json

    rows = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


# The document /openapi.json serves (a test below checks they are the same), one test per
# operation, each on a fresh database.
schema = schemathesis.openapi.from_dict(build_spec("http://127.0.0.1:5000"))


@pytest.fixture
def api_secret(session, seeded_catalog):
    _key, secret = make_key(session, make_user(session))
    return secret


def test_the_fuzzed_document_is_the_served_one(client):
    assert client.get("/openapi.json").get_json() == build_spec("http://127.0.0.1:5000")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_matches_its_schema(case, app, api_secret):
    case.call_and_validate(app=app, headers={"Authorization": f"Bearer {api_secret}"},
                           checks=CHECKS)


def test_found_by_fuzzing_a_non_string_key_name_is_a_422(client, api_secret):
    """Once a 500 (`name: [null, null]` reached .strip())."""
    for body in ({"name": [None, None]}, {"name": "ok", "mode": {"x": 1}}):
        response = client.post("/v1/auth/account/api-keys", json=body,
                               headers={"Authorization": f"Bearer {api_secret}"})
        assert response.status_code == 422, response.get_json()
        assert response.get_json()["error"]["code"] in ("invalid_name", "invalid_mode")
