"""Cookie banner, Cookie settings, consent records and analytics only after consent
(SPEC §10), through the test client: with and without htmx, no JavaScript needed."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from batchrouter.consent import ANALYTICS_COOKIE, CONSENT_COOKIE
from batchrouter.models import AnalyticsEvent, AnalyticsPageView, ConsentRecord
from tests.factories import get_csrf, login, make_user, read

pytestmark = pytest.mark.pg
HX = {"HX-Request": "true"}


def html(response) -> str:
    return response.get_data(as_text=True)


def cookie(client, name):
    found = client.get_cookie(name)
    return found.value if found else None


def choose(client, choice, *, page="/models", analytics=None, headers=None):
    data = {"choice": choice, "next": page, "csrf_token": get_csrf(client, page)}
    if analytics:
        data["analytics"] = "on"
    return client.post("/consent", data=data, headers=headers or {})


def drops_analytics(response) -> bool:
    return any(c.startswith(f"{ANALYTICS_COOKIE}=;") for c in response.headers.getlist("Set-Cookie"))


def views(db) -> int:
    return read(db, lambda s: s.scalar(select(func.coalesce(func.sum(AnalyticsPageView.views),
                                                            0))))


def test_first_visit_shows_the_banner_on_public_and_console_pages(client, session):
    make_user(session)
    page = html(client.get("/models"))
    assert 'data-testid="cookie-banner"' in page
    assert 'value="accept_all">Accept all' in page and 'value="reject_all">Reject all' in page
    assert "<summary>Customize</summary>" in page
    assert 'name="analytics" type="checkbox"  aria' in page  # not pre-ticked
    login(client)
    assert 'data-testid="cookie-banner"' in html(client.get("/account"))
    assert 'data-testid="cookie-banner"' in html(client.get("/privacy"))


def test_fragments_never_carry_the_banner(client, session):
    make_user(session)
    login(client)
    fragment = html(client.get("/api-keys", headers=HX))
    assert "cookie-banner" not in fragment and "<html" not in fragment


def test_reject_all_without_javascript_records_and_sets_no_analytics(client, db):
    response = choose(client, "reject_all")
    assert response.status_code == 303 and response.headers["Location"] == "/models"
    assert cookie(client, ANALYTICS_COOKIE) is None and cookie(client, CONSENT_COOKIE)
    record = read(db, lambda s: s.scalars(select(ConsentRecord)).one())
    assert (record.action, record.analytics, record.essential) == ("reject_all", False, True)
    assert record.policy_version == "2026-11-01" and record.consent_id.startswith("cns_")
    assert record.user_agent_hash and record.user_id is None
    for path in ("/models", "/docs", "/privacy", "/cookies"):
        assert 'data-testid="cookie-banner"' not in html(client.get(path))
    assert views(db) == 0


def test_no_choice_means_no_analytics_even_with_a_forged_cookie(client, db):
    client.set_cookie(ANALYTICS_COOKIE, "vis_01abcdefghjkmnpqrstvwxyz0")
    response = client.get("/models")
    assert views(db) == 0
    assert drops_analytics(response)


def test_accept_all_counts_page_views_per_route_and_day(client, db):
    response = choose(client, "accept_all")
    assert response.status_code == 303
    visitor = cookie(client, ANALYTICS_COOKIE)
    assert visitor and visitor.startswith("vis_")
    client.get("/models")
    client.get("/models")
    client.get("/docs")
    rows = read(db, lambda s: s.execute(select(AnalyticsPageView.route, AnalyticsPageView.views,
                                               AnalyticsPageView.visitor_id)).all())
    assert sorted(rows) == [("/docs", 1, visitor), ("/models", 2, visitor)]
    record = read(db, lambda s: s.scalars(select(ConsentRecord)).one())
    assert record.analytics and record.visitor_id == visitor


def test_customize_with_htmx_swaps_the_banner_and_records_the_choice(client, db):
    response = choose(client, "customize", analytics=True, headers=HX)
    assert response.status_code == 200
    assert 'data-testid="cookie-saved"' in html(response) and "<html" not in html(response)
    assert cookie(client, ANALYTICS_COOKIE)
    assert read(db, lambda s: s.scalars(select(ConsentRecord.action)).one()) == "customize"
    # Customize without ticking analytics: essential only.
    choose(client, "customize")
    assert cookie(client, ANALYTICS_COOKIE) is None


def test_withdrawing_deletes_the_cookie_stops_counting_and_erases(client, db):
    choose(client, "accept_all")
    client.get("/models")
    assert views(db) == 1
    settings = html(client.get("/cookies/settings"))
    assert "essential and analytics" in settings and 'data-testid="consent-history"' in settings
    response = choose(client, "customize", page="/cookies/settings")
    assert drops_analytics(response)
    assert cookie(client, ANALYTICS_COOKIE) is None
    client.get("/models")
    assert views(db) == 0  # what was counted for this browser is erased too
    actions = read(db, lambda s: list(s.scalars(select(ConsentRecord.action)
                                                 .order_by(ConsentRecord.id))))
    assert actions == ["accept_all", "withdraw"]
    assert "essential only" in html(client.get("/cookies/settings"))


def test_signed_in_choice_records_the_user(client, session, db):
    user = make_user(session)
    login(client)
    choose(client, "accept_all", page="/account")
    assert read(db, lambda s: s.scalars(select(ConsentRecord.user_id)).one()) == user.id


@pytest.mark.parametrize("app_overrides", [{}], indirect=True)
def test_a_new_policy_version_asks_again_and_stops_analytics(app, client, db):
    choose(client, "accept_all")
    app.config["BATCHROUTER_POLICY_VERSION"] = "2027-01-01"
    response = client.get("/models")
    assert 'data-testid="cookie-banner"' in html(response)
    assert views(db) == 0 and drops_analytics(response)


def test_activation_event_signed_up_only_with_consent(client, db):
    def sign_up(email):
        token = get_csrf(client, "/signup")
        return client.post("/signup", data={"email": email, "password": "a long passphrase ok",
                                             "csrf_token": token})
    assert sign_up("first@example.com").status_code == 200
    assert read(db, lambda s: s.scalar(select(func.count()).select_from(AnalyticsEvent))) == 0
    choose(client, "accept_all", page="/signup")
    sign_up("second@example.com")
    assert read(db, lambda s: s.scalars(select(AnalyticsEvent.name)).all()) == ["signed_up"]


def test_tampered_consent_cookie_is_ignored(client):
    client.set_cookie(CONSENT_COOKIE, "eyJpZCI6ImNuc194IiwiYSI6MSwidiI6IjIwMjYtMTEtMDEifQ.bad")
    assert 'data-testid="cookie-banner"' in html(client.get("/models"))


def test_policy_pages_fill_in_the_operator_and_list_every_cookie(client, app):
    app.config.update(OPERATOR_NAME="Acme Data GmbH", OPERATOR_EMAIL="privacy@acme.test",
                      RESEND_API_KEY="re_x", BATCHROUTER_SUBPROCESSORS="Hetzner: hosting")
    privacy = html(client.get("/privacy"))
    assert "Acme Data GmbH" in privacy and "privacy@acme.test" in privacy
    assert "Resend" in privacy and "Hetzner" in privacy and "30 days" in privacy
    cookies = html(client.get("/cookies"))
    for name in ("br_session", CONSENT_COOKIE, ANALYTICS_COOKIE):
        assert f"<code>{name}</code>" in cookies
    assert "Acme Data GmbH" in html(client.get("/terms"))


def test_operator_edited_policy_wins(client, app, tmp_path):
    (tmp_path / "privacy.md").write_text("# Our own policy\n\nRun by {{ operator_name }}.")
    app.config.update(BATCHROUTER_POLICY_DIR=str(tmp_path), OPERATOR_NAME="Acme")
    page = html(client.get("/privacy"))
    assert "<h1>Our own policy</h1>" in page and "Run by Acme." in page


def test_operator_sees_aggregates_only(client, session):
    make_user(session, "op@example.com", operator=True)
    choose(client, "accept_all")
    client.get("/models")
    login(client, "op@example.com")
    page = html(client.get("/operator/analytics"))
    assert "<code>/models</code>" in page and "vis_" not in page
