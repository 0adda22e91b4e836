"""Fixtures for the quote / preflight / routing / catalog tests (tests/quote only)."""
from __future__ import annotations

import pytest

from tests.factories import make_key, make_user


@pytest.fixture
def app_overrides(request, tmp_path):
    """Per-test configuration through indirect parametrization; uploads go to a temp dir."""
    return {"BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage"),
            **getattr(request, "param", {})}


@pytest.fixture
def owner(session):
    return make_user(session)


@pytest.fixture
def secret(session, owner, seeded_catalog):
    """A live key with every scope its owner may hold, on a seeded catalog."""
    return make_key(session, owner)[1]


@pytest.fixture
def test_secret(session, owner, seeded_catalog):
    """A test-mode key (br_test_…): only sandbox lanes are eligible."""
    return make_key(session, owner, mode="test")[1]
