"""`make run`'s demo data: loading it twice keeps the same logins and API key, and the key
works against the API."""

from __future__ import annotations

import pytest
from django.urls import reverse

from connections.models import ApiKey, Tenant
from portal import demo
from tests.api.conftest import Api
from tests.flows import sign_in

pytestmark = pytest.mark.django_db


def test_the_demo_loads_twice_with_the_same_key_that_works(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    first = demo.load("http://127.0.0.1:1/login", "http://127.0.0.1:1/graph")
    again = demo.load("http://127.0.0.1:2/login", "http://127.0.0.1:2/graph")
    assert first.api_key == again.api_key and first.api_key.startswith("gpk_")
    assert [login.password for login in first.logins] == [login.password for login in again.logins]
    assert ApiKey.objects.count() == 1
    tenant = Tenant.objects.get(name=demo.DEMO_TENANT)
    assert tenant.return_origin_list == [settings.PORTAL_BASE_URL]
    assert Api(again.api_key).get("/api/v1/connections").status_code == 200


def test_demo_people_sign_in_with_microsoft_at_the_emulator(client, settings, tmp_path, microsoft):
    """make run's Sign in with Microsoft: Alex Wilber is alex's login, Diego joins."""
    settings.VAR_DIR = tmp_path
    settings.MICROSOFT_ALLOW_HTTP = True
    settings.SIGNIN_CLIENT_ID = demo.DEMO_SIGNIN_CLIENT_ID
    settings.SIGNIN_CLIENT_SECRET = demo.DEMO_SIGNIN_SECRET
    settings.SIGNIN_LOGIN_URL = microsoft.login_url
    microsoft.control.update_app(
        demo.DEMO_SIGNIN_CLIENT_ID,
        redirect_uris=[f"{settings.PORTAL_BASE_URL}/connections/callback/"],
    )
    demo.load(microsoft.login_url, microsoft.graph_url)

    sign_in(client, microsoft, user=demo.DEMO_ALEX)
    assert client.get("/").wsgi_request.user.username == "alex"

    client.post(reverse("logout"))
    sign_in(client, microsoft, user="diego.siciliani@contoso.example")
    diego = client.get("/").wsgi_request.user
    assert diego.username == "diego.siciliani@contoso.example"
    assert diego.membership.tenant.name == demo.DEMO_TENANT
