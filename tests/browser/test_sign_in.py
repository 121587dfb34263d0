"""Sign in with Microsoft in Chromium, through the emulator's sign-in page: a directory member
joins and an outsider is refused, an invitation is accepted, and a member signs in and connects
with one consent."""

from __future__ import annotations

import re

import pytest
from django.core import mail

from connections.models import Connection, Invitation, MicrosoftIdentity, Tenant
from tests.conftest import ADELE, FABRIKAM, MS_TENANT
from tests.personas import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def signin(portal, platform):
    """The platform's sign-in app, registered for the live portal's callback."""
    return platform


def pick(page, user_id: str) -> None:
    page.wait_for_selector("text=Pick an account")
    page.check(f"input[value='{user_id}']")
    page.click("#accept")


def test_a_directory_member_joins_and_an_outsider_is_refused(page, portal, signin, contoso):
    Tenant.objects.filter(pk=contoso.tenant.pk).update(
        directory_id=MS_TENANT, join_policy=Tenant.JoinPolicy.DIRECTORY
    )
    signin.control.add_tenant(id=FABRIKAM, domain="fabrikam.example", name="Fabrikam")
    eve = signin.control.add_user(FABRIKAM, upn="eve@fabrikam.example")

    page.goto(f"{portal}/accounts/login/")
    page.click("#sign-in-with-microsoft")
    pick(page, eve["id"])
    page.wait_for_selector("text=You cannot sign in here yet")
    assert "eve@fabrikam.example" in page.content()
    assert not MicrosoftIdentity.objects.exists()

    page.click("text=Back to sign in")
    page.click("#sign-in-with-microsoft")
    pick(page, ADELE)
    page.wait_for_selector("text=Welcome to Contoso Ltd")
    assert "adele.vance@contoso.example" in page.locator("header").inner_text()
    identity = MicrosoftIdentity.objects.get()
    assert identity.user.membership.tenant == contoso.tenant


def test_an_invitation_is_accepted_with_microsoft(page, portal, signin, contoso):
    page.goto(f"{portal}/admin/login/")
    page.fill("#id_username", contoso.admin.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.goto(f"{portal}/admin/connections/invitation/add/")
    page.fill("#id_email", "adele.vance@contoso.example")
    page.select_option("#id_role", "admin")
    page.click("input[name=_save]")
    page.wait_for_selector("text=was added successfully")
    link = re.search(r"https?://\S+/accounts/invitations/\S+/", mail.outbox[-1].body).group(0)

    page.context.clear_cookies()
    page.goto(link)
    page.wait_for_selector("text=Join Contoso Ltd")
    page.click("#accept-with-microsoft")
    pick(page, ADELE)
    page.wait_for_selector("text=Welcome to Contoso Ltd")
    page.goto(f"{portal}/admin/")
    page.wait_for_selector("text=Site administration")  # a tenant administrator now
    assert Invitation.objects.get().accepted_by.microsoft_identities.get().ms_object_id == ADELE


def test_sign_in_and_connect_with_one_consent(page, portal, microsoft, contoso):
    Tenant.objects.filter(pk=contoso.tenant.pk).update(
        directory_id=MS_TENANT, join_policy=Tenant.JoinPolicy.DIRECTORY, signin_app=contoso.app
    )
    page.goto(f"{portal}/accounts/microsoft/{contoso.tenant.signin_key}/")
    assert page.is_checked("input[name=connect]")
    page.click("#sign-in-with-microsoft")

    page.wait_for_selector("text=Pick an account")
    assert "Mail.Read" in page.content()  # one consent screen: sign-in and the sync scopes
    pick(page, ADELE)

    page.wait_for_selector("text=Connected adele.vance@contoso.example")
    connection = Connection.objects.get()
    assert connection.user.microsoft_identities.get().ms_object_id == ADELE
    assert connection.refresh_token
