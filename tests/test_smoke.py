from tests.factories import bearer, login, make_key, make_user


def test_healthz(client):
    assert client.get("/healthz").json == {"status": "ok"}


def test_login_and_account(client, session):
    user = make_user(session)
    login(client)
    assert b"Dashboard" in client.get("/").data
    _key, secret = make_key(session, user)
    body = client.get("/v1/auth/account", headers=bearer(secret)).json
    assert body["credit_balance"] == "5.000000"
