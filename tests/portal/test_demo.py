"""`make run`'s demo data: loading it twice keeps the same logins and API key, and the key
works against the API."""

from __future__ import annotations

import pytest

from connections.models import ApiKey, Tenant
from portal import demo
from tests.api.conftest import Api

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
