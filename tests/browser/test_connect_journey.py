"""A member connects through the emulator's consent page; a tenant admin registers an app."""

from __future__ import annotations

import re

import pytest

from connections.models import Connection, EntraApp
from tests.personas import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in(page, portal, user, path="/"):
    page.goto(f"{portal}{path}")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(lambda url: "/login/" not in url)


def test_member_connects_an_account_in_a_real_browser(page, portal, contoso):
    sign_in(page, portal, contoso.member)
    page.wait_for_selector("text=My Microsoft connections")
    page.click("text=Connect with Microsoft")

    # The emulator's sign-in and consent page, on the login host.
    page.wait_for_selector("text=Pick an account")
    assert "Mail.Read" in page.content()
    page.check("input[value='5f1c9e2a-7b3d-4c8e-9f10-2a3b4c5d6e7f']")  # Adele Vance
    page.click("#accept")

    # form_post back to the portal, then My connections.
    page.wait_for_url(re.compile(r"/connections/$"))
    card = page.locator(".connection")
    card.wait_for()
    assert "Adele Vance" in card.inner_text()
    assert "Active" in card.inner_text()
    connection = Connection.objects.get()
    assert connection.user_principal_name == "adele.vance@contoso.example"
    assert connection.refresh_token


def test_tenant_admin_registers_an_app_after_a_bad_client_id(page, portal, contoso):
    sign_in(page, portal, contoso.admin, path="/admin/connections/entraapp/add/")
    page.fill("#id_name", "Fabrikam sync")
    page.fill("#id_client_id", "my-app")
    page.fill("#id_authority", "organizations")
    page.fill("#id_delegated_scopes", "User.Read Mail.Read")
    page.click("input[name=_save]")
    error = page.locator(".errorlist").first
    error.wait_for()
    assert "is not a GUID" in error.inner_text()
    assert not EntraApp.objects.filter(name="Fabrikam sync").exists()

    page.fill("#id_client_id", "0f9e8d7c-6b5a-4c3d-9e2f-1a0b9c8d7e6f")
    page.click("input[name=_save]")
    page.wait_for_selector("text=was added successfully")
    app = EntraApp.objects.get(name="Fabrikam sync")
    assert app.tenant == contoso.tenant
    page.goto(f"{portal}/admin/connections/entraapp/{app.pk}/change/")
    assert page.locator("#gp-redirect-uri").inner_text() == f"{portal}/connections/callback/"
