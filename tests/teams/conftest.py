"""Fixtures for the team tests: one workspace with a person in every role."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.factories import add_member, make_user, workspace_of

ROLES = ("owner", "admin", "member", "viewer")


@dataclass
class Team:
    workspace_id: str
    users: dict  # role -> User

    def email(self, role: str) -> str:
        return f"{role}@example.com"

    def user_id(self, role: str) -> str:
        return self.users[role].id


@pytest.fixture
def team(session) -> Team:
    """owner@, admin@, member@ and viewer@example.com in the owner's workspace."""
    owner = make_user(session, "owner@example.com")
    workspace_id = workspace_of(session, owner)
    users = {"owner": owner}
    for role in ROLES[1:]:
        users[role] = add_member(session, workspace_id, f"{role}@example.com", role)
    return Team(workspace_id=workspace_id, users=users)


@pytest.fixture
def app_overrides(request):
    """Per-test configuration through indirect parametrization (default: none)."""
    return getattr(request, "param", {})
