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


@pytest.fixture(autouse=True)
def installed_adapters(monkeypatch):
    """Route to openai / anthropic / openrouter lanes when their credentials are set.

    The quote engine only routes to providers whose adapter this installation has
    (providers.ADAPTERS); until the real adapters land only sandbox is listed. These tests are
    about catalog, preflight, pricing and routing, where "configured" means "credentials
    present" (SPEC §4), so the real adapters are declared present here. Quoting never calls
    an adapter."""
    try:
        from batchrouter import providers
    except ImportError:  # pragma: no cover - before the providers package existed
        return
    current = getattr(providers, "ADAPTERS", None)
    if current is None:
        return
    wanted = ("openai", "anthropic", "openrouter", "sandbox")
    if isinstance(current, dict):
        monkeypatch.setattr(providers, "ADAPTERS",
                            {**{kind: None for kind in wanted}, **current})
    else:
        monkeypatch.setattr(providers, "ADAPTERS", set(current) | set(wanted))
