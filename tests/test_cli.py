"""The operator commands of SPEC §12 through Flask's CLI runner."""
from sqlalchemy import select

from batchrouter import apikeys, ledger
from batchrouter.cli import DEMO_EMAIL, DEMO_PASSWORD
from batchrouter.models import ApiKey, User
from tests.factories import workspace_of


def invoke(app, *args):
    return app.test_cli_runner().invoke(args=list(args), catch_exceptions=False)


def test_users_create_and_keys_create(app, session):
    result = invoke(app, "users", "create", "--email", "ops@example.com", "--password",
                    "operator password", "--workspace", "Ops", "--operator", "--verified")
    assert result.exit_code == 0, result.output
    user = session.scalars(select(User).where(User.email == "ops@example.com")).one()
    assert user.is_operator and user.is_verified
    result = invoke(app, "keys", "create", "--email", "ops@example.com", "--name", "cli",
                    "--scopes", "read,quote")
    secret = result.output.strip()
    session.rollback()  # end the read snapshot so the new key is visible
    assert result.exit_code == 0 and secret.startswith("br_live_") and "\n" not in secret
    key = apikeys.authenticate_key(session, secret)
    assert sorted(key.scopes) == ["quote", "read"]
    test_secret = invoke(app, "keys", "create", "--email", "ops@example.com", "--name", "t",
                         "--test").output.strip()
    assert test_secret.startswith("br_test_")


def test_users_create_rejects_duplicates_and_weak_passwords(app):
    assert invoke(app, "users", "create", "--email", "a@example.com", "--password",
                  "long enough pw").exit_code == 0
    again = app.test_cli_runner().invoke(args=["users", "create", "--email", "a@example.com",
                                               "--password", "long enough pw"])
    assert again.exit_code != 0 and "exists" in again.output
    weak = app.test_cli_runner().invoke(args=["users", "create", "--email", "b@example.com",
                                              "--password", "short"])
    assert weak.exit_code != 0 and "8 characters" in weak.output


def test_seed_is_idempotent_and_funds_the_demo(app, session):
    first = invoke(app, "seed")
    second = invoke(app, "seed")
    assert DEMO_EMAIL in first.output and DEMO_PASSWORD in first.output
    assert first.output == second.output
    user = session.scalars(select(User).where(User.email == DEMO_EMAIL)).one()
    assert user.is_verified and user.is_operator
    assert ledger.balances(session, workspace_of(session, user)).available == 100_000_000
    assert session.scalars(select(ApiKey)).all() == []


def test_keys_create_for_unknown_user_fails(app):
    result = app.test_cli_runner().invoke(args=["keys", "create", "--email",
                                                "ghost@example.com", "--name", "x"])
    assert result.exit_code != 0 and "no user" in result.output


def test_credits_grant_by_email_and_workspace(app, session):
    from tests.factories import make_user

    user = make_user(session, "rich@example.com")
    ws = workspace_of(session, user)
    result = invoke(app, "credits", "grant", "--email", "rich@example.com", "--amount", "12.50",
                    "--reason", "goodwill")
    assert result.exit_code == 0 and "granted 12.500000" in result.output
    invoke(app, "credits", "grant", "--workspace", ws, "--amount", "1", "--reason", "again")
    session.rollback()
    assert ledger.balances(session, ws).available == 5_000_000 + 12_500_000 + 1_000_000
    bad = app.test_cli_runner().invoke(args=["credits", "grant", "--workspace", ws,
                                             "--amount", "1.5e3", "--reason", "x"])
    assert bad.exit_code != 0
    assert ledger.verify_balances(session) == []


def test_worker_lowers_its_priority_unless_burst(app, monkeypatch):
    """A long-running worker yields the CPU to web requests; a burst run keeps its priority."""
    import jobs.worker
    from batchrouter import cli

    niced, ran = [], []
    monkeypatch.setattr(cli, "_lower_priority", niced.append)
    monkeypatch.setattr(jobs.worker, "run_worker", lambda _app, names, burst: ran.append(burst))
    app.config["BATCHROUTER_WORKER_NICE"] = 7
    invoke(app, "worker")
    invoke(app, "worker", "--burst")
    assert niced == [7] and ran == [False, True]
