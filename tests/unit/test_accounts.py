"""Account flows as plain domain functions (no Flask)."""
import pytest
from sqlalchemy import func, select

from batchrouter import accounts, ledger, passwords, tokens
from batchrouter.errors import ValidationFailed
from batchrouter.models import EmailMessage, OutboxMessage, SecurityEvent, User
from tests.factories import PASSWORD, SETTINGS, make_user

CLIENT = accounts.Client(ip="127.0.0.1", user_agent="pytest")


def emails(session, template=None):
    stmt = select(EmailMessage)
    if template:
        stmt = stmt.where(EmailMessage.template == template)
    return list(session.scalars(stmt))


def token_from(text, path):
    return text.split(f"{path}/", 1)[1].split()[0]


def test_sign_up_creates_owner_workspace_credits_and_verification(session):
    user = accounts.sign_up(session, "  New@Example.COM ", PASSWORD, SETTINGS, CLIENT)
    session.commit()
    assert user.email == "new@example.com" and not user.is_verified
    membership = accounts.memberships_of(session, user.id)[0]
    assert membership.role == "owner"
    assert ledger.balances(session, membership.workspace_id).available == 5_000_000
    [message] = emails(session, "verify_email")
    assert message.to == "new@example.com" and "/verify-email/" in message.text
    outbox = session.scalars(select(OutboxMessage)).all()
    assert [o.func for o in outbox] == ["jobs.email.send_email"]
    assert outbox[0].args == [message.id]


def test_sign_up_with_taken_email_creates_nothing_and_tells_the_owner(session):
    make_user(session, "taken@example.com")
    assert accounts.sign_up(session, "taken@example.com", PASSWORD, SETTINGS, CLIENT) is None
    session.commit()
    assert session.scalar(select(func.count()).select_from(User)) == 1
    assert len(emails(session, "account_exists")) == 1


def test_password_policy():
    for bad in ["short", "password", "x" * 1025]:
        with pytest.raises(ValidationFailed):
            passwords.check_policy(bad)
    passwords.check_policy("🔒 a long passphrase with emoji")


def test_password_hash_is_argon2id_with_owasp_parameters():
    stored = passwords.hash_password(PASSWORD)
    assert stored.startswith("$argon2id$") and "m=19456,t=2,p=1" in stored


def test_authenticate_same_result_for_unknown_and_wrong(session):
    make_user(session, "a@example.com")
    assert accounts.authenticate(session, "a@example.com", PASSWORD, CLIENT).email == \
        "a@example.com"
    assert accounts.authenticate(session, "a@example.com", "wrong password", CLIENT) is None
    assert accounts.authenticate(session, "ghost@example.com", PASSWORD, CLIENT) is None
    failures = session.scalars(select(SecurityEvent)
                               .where(SecurityEvent.kind == "login_failed")).all()
    assert {f.email for f in failures} == {"a@example.com", "ghost@example.com"}


def test_old_hash_parameters_are_upgraded_on_login(session):
    from argon2 import PasswordHasher

    user = make_user(session, "old@example.com")
    user.password_hash = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    session.commit()
    accounts.authenticate(session, "old@example.com", PASSWORD, CLIENT)
    assert "m=19456,t=2,p=1" in user.password_hash


def test_verification_link_works_once(session):
    user = accounts.sign_up(session, "v@example.com", PASSWORD, SETTINGS, CLIENT)
    session.commit()
    token = token_from(emails(session, "verify_email")[0].text, "/verify-email")
    assert accounts.verify_email(session, token, SETTINGS).is_verified
    with pytest.raises(tokens.TokenInvalid):
        accounts.verify_email(session, token, SETTINGS)
    assert user.is_verified


def test_verification_link_expires(session):
    user = make_user(session, "late@example.com", verified=False)
    token = tokens.sign(SETTINGS.secret, accounts.VERIFY_PURPOSE,
                        {"uid": user.id, "email": user.email})
    import dataclasses
    expired = dataclasses.replace(SETTINGS, verify_ttl=-1)
    with pytest.raises(tokens.TokenExpired):
        accounts.verify_email(session, token, expired)


def test_token_of_another_purpose_is_rejected(session):
    user = make_user(session, "p@example.com", verified=False)
    token = tokens.sign(SETTINGS.secret, accounts.RESET_PURPOSE, {"uid": user.id,
                                                                  "email": user.email})
    with pytest.raises(tokens.TokenInvalid):
        accounts.verify_email(session, token, SETTINGS)


def test_reset_is_single_use_and_revokes_sessions(session):
    user = make_user(session, "r@example.com")
    record = accounts.start_session(session, user, CLIENT)
    accounts.request_password_reset(session, "r@example.com", SETTINGS, CLIENT)
    accounts.request_password_reset(session, "nobody@example.com", SETTINGS, CLIENT)
    session.commit()
    [message] = emails(session, "reset_password")
    token = token_from(message.text, "/reset-password")
    accounts.reset_password(session, token, "a brand new secret", SETTINGS, CLIENT)
    session.commit()
    assert passwords.verify_password(user.password_hash, "a brand new secret")
    session.refresh(record)
    assert record.revoked_at is not None
    with pytest.raises(tokens.TokenInvalid):
        accounts.reset_password(session, token, "another new secret", SETTINGS, CLIENT)


def test_sessions_expire_when_idle_or_too_old(session):
    user = make_user(session, "s@example.com")
    record = accounts.start_session(session, user, CLIENT)
    session.commit()
    assert accounts.console_session(session, record.id, idle_ttl=60, absolute_ttl=60)
    assert accounts.console_session(session, record.id, idle_ttl=-1, absolute_ttl=60) is None
    assert accounts.console_session(session, record.id, idle_ttl=60, absolute_ttl=-1) is None
    accounts.end_session(session, record.id, CLIENT)
    assert accounts.console_session(session, record.id, idle_ttl=60, absolute_ttl=60) is None


def test_email_normalisation_rejects_junk():
    for bad in ["", "no-at-sign", "a@b", "zero\u200bwidth@example.com", "x" * 400 + "@e.com"]:
        with pytest.raises(ValidationFailed):
            accounts.normalize_email(bad)
    assert accounts.normalize_email(" MiXeD@Example.Com ") == "mixed@example.com"
