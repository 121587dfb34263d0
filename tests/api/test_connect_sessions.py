"""Connect sessions: a customer's backend connects one of its own end users, who needs no
Graphport account, and gets the browser back on its own site with the outcome."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from connections.models import AuthorizationAttempt, Connection, ConnectSession
from tests.api.conftest import key_for, problem
from tests.conftest import ADELE
from tests.flows import follow_back

pytestmark = pytest.mark.django_db

ORIGIN = "https://app.customer.example"


@pytest.fixture
def customer(contoso):
    contoso.tenant.return_origins = ORIGIN
    contoso.tenant.save()
    return key_for(contoso.tenant)


def new_session(customer, contoso, **overrides):
    body = {
        "app": contoso.app.pk,
        "end_user_id": "cust-42",
        "end_user_email": "jo@customer.example",
        "end_user_name": "Jo Customer",
        "return_url": f"{ORIGIN}/connected?from=graphport",
        **overrides,
    }
    return customer.post("/api/v1/connect-sessions", body)


def open_in_a_browser(url: str) -> tuple[Client, str]:
    browser = Client()
    response = browser.get(urlsplit(url).path)
    assert response.status_code == 302, response.content
    return browser, response["Location"]


def test_an_end_user_connects_through_a_session_and_comes_back_with_the_outcome(
    customer, contoso, microsoft
):
    created = new_session(customer, contoso)
    assert created.status_code == 201, created.content
    session = created.json()
    assert session["url"].startswith("http") and "/connections/session/gcs_" in session["url"]

    browser, authorize_url = open_in_a_browser(session["url"])
    assert authorize_url.startswith(microsoft.login_url)
    back = follow_back(browser, microsoft.control.sign_in(authorize_url, ADELE))

    assert back.status_code == 302
    landing = urlsplit(back["Location"])
    assert f"{landing.scheme}://{landing.netloc}{landing.path}" == f"{ORIGIN}/connected"
    query = parse_qs(landing.query)
    assert query["from"] == ["graphport"] and query["outcome"] == ["connected"]
    connection = Connection.objects.get(pk=int(query["connection"][0]))
    assert connection.user is None and connection.end_user_id == "cust-42"
    assert connection.end_user_email == "jo@customer.example"
    assert ConnectSession.objects.get(pk=session["id"]).outcome == "connected"

    found = customer.get("/api/v1/connections", {"end_user": "cust-42"}).json()["results"]
    assert [c["id"] for c in found] == [connection.pk]
    assert found[0]["end_user"] == {
        "id": "cust-42",
        "email": "jo@customer.example",
        "display_name": "Jo Customer",
    }


def test_a_cancelled_sign_in_comes_back_as_failed(customer, contoso, microsoft):
    session = new_session(customer, contoso).json()
    browser, authorize_url = open_in_a_browser(session["url"])
    back = follow_back(browser, microsoft.control.sign_in(authorize_url, ADELE, action="cancel"))
    query = parse_qs(urlsplit(back["Location"]).query)
    assert query["outcome"] == ["failed"] and query["error"] == ["cancelled"]
    assert not Connection.objects.filter(end_user_id="cust-42").exists()


def test_a_link_works_once(customer, contoso):
    session = new_session(customer, contoso).json()
    open_in_a_browser(session["url"])
    again = Client().get(urlsplit(session["url"]).path)
    assert again.status_code == 410 and "already used" in again.text


def test_an_expired_link_is_refused(customer, contoso):
    session = new_session(customer, contoso).json()
    ConnectSession.objects.filter(pk=session["id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    response = Client().get(urlsplit(session["url"]).path)
    assert response.status_code == 410 and "expired" in response.text
    assert not AuthorizationAttempt.objects.exists()


def test_another_browser_cannot_finish_the_sign_in(customer, contoso, microsoft):
    """The attempt is bound to the browser that opened the link: a callback carrying its
    state from elsewhere (login CSRF) stores nothing."""
    session = new_session(customer, contoso).json()
    _, authorize_url = open_in_a_browser(session["url"])
    outcome = microsoft.control.sign_in(authorize_url, ADELE)
    response = follow_back(Client(), outcome)
    assert response.status_code in (200, 400)
    assert not Connection.objects.filter(end_user_id="cust-42").exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"return_url": "https://evil.example/steal"}, "return_url"),
        ({"return_url": "https://app.customer.example.evil.example/"}, "return_url"),
        ({"return_url": "http://app.customer.example/"}, "return_url"),
        ({"return_url": "/relative"}, "return_url"),
        ({"return_url": "https://user@app.customer.example/"}, "return_url"),
        ({"end_user_id": ""}, "end_user_id"),
        ({"end_user_id": "x" * 256}, "end_user_id"),
        ({"end_user_email": "not an address"}, "end_user_email"),
        ({"app": 999999}, "app"),
    ],
)
def test_bad_session_input_names_the_field_and_stores_nothing(customer, contoso, overrides, field):
    body = problem(new_session(customer, contoso, **overrides), 400, "invalid-request")
    assert field in [error["field"] for error in body["errors"]]
    assert not ConnectSession.objects.exists()


def test_an_app_of_another_tenant_cannot_be_used(customer, contoso, acme):
    body = problem(new_session(customer, contoso, app=acme.app.pk), 400, "invalid-request")
    assert body["errors"][0]["field"] == "app"


def test_the_admin_checks_allowed_origins(client, contoso):
    client.force_login(contoso.admin)
    from django.urls import reverse

    url = reverse("admin:connections_tenant_change", args=[contoso.tenant.pk])
    response = client.post(
        url,
        {
            "name": contoso.tenant.name,
            "return_origins": "https://ok.example\nhttps://bad.example/with/path",
            "join_policy": "invited",
            "memberships-TOTAL_FORMS": 0,
            "memberships-INITIAL_FORMS": 0,
        },
    )
    assert "has a path or query" in response.text
    response = client.post(
        url,
        {
            "name": contoso.tenant.name,
            "return_origins": "https://OK.example:443/\nhttps://app.example:8443",
            "join_policy": "invited",
            "memberships-TOTAL_FORMS": 0,
            "memberships-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302, response.text
    contoso.tenant.refresh_from_db()
    assert contoso.tenant.return_origin_list == ["https://ok.example", "https://app.example:8443"]
