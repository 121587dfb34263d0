"""Fixtures of the connections tests."""

from __future__ import annotations

import pytest

from tests.conftest import MS_TENANT

PLATFORM_CLIENT_ID = "7d2c4b1a-9e8f-4a6b-8c5d-3e2f1a0b9c8d"
PLATFORM_SECRET = "platform~secret.SignInEmulator01234567890"
FABRIKAM = "2b4d6f80-1a3c-4e5f-8a7b-9c0d1e2f3a4b"


@pytest.fixture
def platform(microsoft, settings):
    """The operator's multi-tenant sign-in app, registered at the emulator."""
    settings.MICROSOFT_ALLOW_HTTP = True
    settings.SIGNIN_CLIENT_ID = PLATFORM_CLIENT_ID
    settings.SIGNIN_CLIENT_SECRET = PLATFORM_SECRET
    settings.SIGNIN_LOGIN_URL = microsoft.login_url
    settings.SIGNIN_AUTHORITY = "organizations"
    microsoft.control.add_app(
        client_id=PLATFORM_CLIENT_ID,
        name="Graphport sign-in",
        home_tenant=MS_TENANT,
        multi_tenant=True,
        redirect_uris=[f"{settings.PORTAL_BASE_URL}/connections/callback/"],
        secrets=[{"value": PLATFORM_SECRET, "expires_in": 86400}],
    )
    return microsoft


@pytest.fixture
def fabrikam(microsoft):
    """Another Microsoft directory, with a user whose e-mail is a Contoso member's."""
    microsoft.control.add_tenant(id=FABRIKAM, domain="fabrikam.example", name="Fabrikam")
    return microsoft


@pytest.fixture(autouse=True)
def no_webhook_tasks(settings):
    """Raising an event queues no delivery task unless a test asks for one: the session's
    worker takes the webhooks queue, and delivering while a test's tables are being emptied
    can deadlock with the TRUNCATE."""
    settings.WEBHOOK_DELIVER_ON_COMMIT = False
