"""Plain factory functions and helpers the tests share."""
from __future__ import annotations

import re

from batchrouter import accounts, apikeys
from batchrouter.models import Membership

PASSWORD = "correct horse battery"
SETTINGS = accounts.Settings(secret="test-secret", base_url="http://127.0.0.1:5000",
                             starter_credits=5_000_000)


def read(db, fn):
    """Run fn(session) in a short-lived session (closed at once: no lingering locks)."""
    with db.sessionmaker() as s:
        return fn(s)


def make_user(session, email="owner@example.com", password=PASSWORD, *, verified=True,
              operator=False, settings=SETTINGS):
    user = accounts.create_user(session, email, password, settings, verified=verified,
                                operator=operator)
    session.commit()
    return user


def workspace_of(session, user):
    return accounts.memberships_of(session, user.id)[0].workspace_id


def add_member(session, workspace_id, email, role, password=PASSWORD):
    """A user who joins an existing workspace with `role` (their own workspace is removed)."""
    user = make_user(session, email, password)
    own = accounts.memberships_of(session, user.id)[0]
    session.delete(own)
    session.add(Membership(workspace_id=workspace_id, user_id=user.id, role=role))
    session.commit()
    return user


def make_key(session, user, *, scopes=None, mode="live", role=None):
    membership = accounts.memberships_of(session, user.id)[0]
    key, secret = apikeys.create_key(session, workspace_id=membership.workspace_id,
                                     creator_id=user.id, creator_role=role or membership.role,
                                     name="test key", scopes=scopes, mode=mode)
    session.commit()
    return key, secret


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
HX_CSRF_RE = re.compile(r'"X-CSRFToken": "([^"]+)"')


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html) or HX_CSRF_RE.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def get_csrf(client, path="/login") -> str:
    return csrf_from(client.get(path).get_data(as_text=True))


def login(client, email="owner@example.com", password=PASSWORD):
    token = get_csrf(client, "/login")
    response = client.post("/login", data={"email": email, "password": password,
                                           "csrf_token": token})
    assert response.status_code in (302, 303), response.get_data(as_text=True)[:500]
    return response


def post_form(client, path, data, page=None):
    """POST a console form with the CSRF token taken from `page` (default: the same path)."""
    token = get_csrf(client, page or path)
    return client.post(path, data={**data, "csrf_token": token})
