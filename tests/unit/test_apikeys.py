from datetime import timedelta

import pytest

from batchrouter import apikeys
from batchrouter.db import utcnow
from batchrouter.errors import Forbidden, Unauthorized, ValidationFailed
from tests.factories import make_user, workspace_of


def test_secret_format_and_checksum():
    secret = apikeys.generate_secret("live")
    assert secret.startswith("br_live_") and apikeys.well_formed(secret)
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert not apikeys.well_formed(flipped)
    assert not apikeys.well_formed("br_live_short")
    assert apikeys.well_formed(apikeys.generate_secret("test"))


def test_create_stores_only_a_hash_and_authenticates(session):
    user = make_user(session)
    key, secret = apikeys.create_key(session, workspace_id=workspace_of(session, user),
                                     creator_id=user.id, creator_role="owner", name="ci",
                                     scopes=["read"])
    assert key.secret_hash != secret and secret not in (key.prefix + key.last4)
    assert apikeys.display(key) == f"{secret[:8]}…{secret[-4:]}"
    assert apikeys.authenticate_key(session, secret).id == key.id
    apikeys.revoke_key(session, key.workspace_id, key.id, actor_id=user.id)
    with pytest.raises(Unauthorized):
        apikeys.authenticate_key(session, secret)


def test_key_never_exceeds_role(session):
    user = make_user(session)
    ws = workspace_of(session, user)
    with pytest.raises(Forbidden):
        apikeys.create_key(session, workspace_id=ws, creator_id=user.id, creator_role="member",
                           name="x", scopes=["admin"])
    key, _ = apikeys.create_key(session, workspace_id=ws, creator_id=user.id,
                                creator_role="viewer", name="x", scopes=None)
    assert key.scopes == ["read"]
    with pytest.raises(ValidationFailed):
        apikeys.create_key(session, workspace_id=ws, creator_id=user.id, creator_role="owner",
                           name="x", scopes=["teleport"])


def test_unverified_users_get_test_keys_only(session):
    user = make_user(session, verified=False)
    ws = workspace_of(session, user)
    with pytest.raises(Forbidden):
        apikeys.create_key(session, workspace_id=ws, creator_id=user.id, creator_role="owner",
                           name="x", scopes=None, verified=False)
    key, secret = apikeys.create_key(session, workspace_id=ws, creator_id=user.id,
                                     creator_role="owner", name="x", scopes=None, mode="test",
                                     verified=False)
    assert secret.startswith("br_test_") and key.mode == "test"


def test_expired_key_rejected(session):
    user = make_user(session)
    key, secret = apikeys.create_key(session, workspace_id=workspace_of(session, user),
                                     creator_id=user.id, creator_role="owner", name="x",
                                     scopes=None, expires_at=utcnow() + timedelta(seconds=60))
    key.expires_at = utcnow() - timedelta(seconds=1)
    with pytest.raises(Unauthorized) as err:
        apikeys.authenticate_key(session, secret)
    assert err.value.code == "api_key_expired"


def test_scope_check_respects_role_downgrade(session):
    user = make_user(session)
    key, _ = apikeys.create_key(session, workspace_id=workspace_of(session, user),
                                creator_id=user.id, creator_role="owner", name="x", scopes=None)
    apikeys.require_scope(key, "admin")
    key.role = "viewer"
    with pytest.raises(Forbidden):
        apikeys.require_scope(key, "admin")
