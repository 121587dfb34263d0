"""The whole journey in a real browser: an operator sets up a tenant, its administrator registers
and verifies an app and grants admin consent, a member connects and watches data arrive, the
grant is revoked at Microsoft, and reconnecting restores it. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
import time

import pytest
from django.utils import timezone

from connections.models import Connection, EntraApp
from graphsync.models import Record
from tests.browser.conftest import ARTIFACTS
from tests.conftest import ADELE, MS_CLIENT_ID, MS_SECRET, MS_TENANT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "a-long-unusual-passphrase"


def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"journey-{name}.png"), full_page=True)


def sign_in(page, portal, username, path):
    page.context.clear_cookies()
    page.goto(f"{portal}{path}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(lambda url: "/login/" not in url)
    page.wait_for_load_state()


def add_member(page, portal, username, tenant, role):
    page.goto(f"{portal}/admin/connections/member/add/")
    page.fill("#id_username", username)
    page.fill("#id_email", f"{username}@fabrikam.example")
    page.select_option("#id_tenant", label=tenant)
    page.select_option("#id_role", role)
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("input[name=_save]")
    page.wait_for_selector("text=was added successfully")


def accept_as(page, user_id):
    page.wait_for_selector("text=Pick an account")
    page.check(f"input[value='{user_id}']")
    page.click("#accept")


def test_operator_to_member_journey(
    page, portal, microsoft, celery_worker, settings, django_user_model
):
    settings.GRAPHSYNC_START_ON_CONNECT = True
    django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)

    # The operator creates the tenant and its administrator.
    sign_in(page, portal, "root", "/admin/")
    page.goto(f"{portal}/admin/connections/tenant/add/")
    page.fill("#id_name", "Fabrikam")
    page.click("input[name=_save]")
    page.wait_for_selector("text=was added successfully")
    add_member(page, portal, "fabrikam-admin", "Fabrikam", "admin")

    # Only an operator may point an app at a custom cloud (here the emulator): the operator
    # starts the registration and the tenant's administrator completes it.
    page.goto(f"{portal}/admin/connections/entraapp/add/")
    page.select_option("#id_tenant", label="Fabrikam")
    page.fill("#id_name", "Fabrikam Graph")
    page.fill("#id_client_id", MS_CLIENT_ID)
    page.select_option("#id_cloud", "custom")
    page.fill("#id_login_base_url", microsoft.login_url)
    page.fill("#id_graph_base_url", microsoft.graph_url)
    page.fill("#id_authority", MS_TENANT)
    page.click("input[name=_save]")
    page.wait_for_selector("text=was added successfully")
    app = EntraApp.objects.get(name="Fabrikam Graph")

    # The tenant administrator completes it: two bad inputs first.
    sign_in(page, portal, "fabrikam-admin", f"/admin/connections/entraapp/{app.pk}/change/")
    page.fill("#id_client_id", "fabrikam-app")
    page.fill("#id_directory_tenant_id", MS_TENANT)
    page.fill("#id_delegated_scopes", "https://graph.microsoft.com/.default Mail.Read")
    page.check("#id_use_application_permissions")
    page.click("input[name=_save]")
    page.wait_for_selector("text=Please correct the errors below")
    errors = page.locator(".errorlist").all_inner_texts()
    assert any("is not a GUID" in e for e in errors)
    assert any("AADSTS70011" in e for e in errors)
    shot(page, "1-app-refused")
    page.fill("#id_client_id", MS_CLIENT_ID)
    page.fill("#id_delegated_scopes", "User.Read Mail.Read Calendars.Read Contacts.Read Files.Read")
    page.click("#secrets-group .add-row a")
    page.fill("#id_secrets-0-new_value", MS_SECRET)
    page.fill("#id_secrets-0-expires_on", f"{timezone.localdate().year + 1}-06-30")
    page.click("input[name=_continue]")
    page.wait_for_selector("text=was changed successfully")
    assert MS_SECRET not in page.content()

    page.click("text=Verify credentials")
    page.wait_for_selector("text=works.")
    page.click("text=Grant admin consent")
    accept_as(page, ADELE)
    page.wait_for_selector("text=Admin consent granted and verified")
    shot(page, "2-app-verified")
    assert Connection.objects.filter(app=app, kind=Connection.Kind.APPLICATION).exists()
    add_member(page, portal, "fabrikam-member", "Fabrikam", "member")

    # A member connects their Microsoft account.
    sign_in(page, portal, "fabrikam-member", "/")
    page.click("text=Connect with Microsoft")
    accept_as(page, ADELE)
    page.wait_for_url(re.compile(r"/connections/$"))
    card = page.locator(".connection")
    assert "Active" in card.inner_text() and "Adele Vance" in card.inner_text()
    connection = Connection.objects.get(app=app, kind=Connection.Kind.DELEGATED)

    # The first sync runs in the worker; its records show in the portal and the admin.
    deadline = time.monotonic() + 60
    while Record.objects.filter(connection=connection, resource="mail").count() < 100:
        assert time.monotonic() < deadline, "no mail synced within 60 s"
        time.sleep(0.5)
    page.reload()
    page.wait_for_selector("text=What is synced")
    shot(page, "3-member-connected")
    page.goto(f"{portal}/sync/connections/{connection.pk}/records/?resource=mail")
    assert page.locator("tbody tr").count() > 10
    sign_in(page, portal, "fabrikam-admin", "/admin/graphsync/record/")
    page.wait_for_selector("#result_list tbody tr")
    assert page.locator("#result_list tbody tr").count() > 10
    shot(page, "4-admin-records")

    # Microsoft revokes the grant; the next refresh tells whose move it is.
    microsoft.control.revoke_grant(ADELE, MS_CLIENT_ID)
    page.goto(f"{portal}/admin/connections/connection/?kind__exact=delegated")
    page.check(f"input[name=_selected_action][value='{connection.pk}']")
    page.select_option("select[name=action]", "refresh_now")
    page.click("button[name=index]")
    page.wait_for_selector("text=Reconnect needed")
    shot(page, "5-admin-reconnect-needed")
    sign_in(page, portal, "fabrikam-member", "/")
    assert "Reconnect needed" in page.locator(".connection").inner_text()

    # Reconnecting restores it.
    page.click(".connection button:text-is('Reconnect')")
    accept_as(page, ADELE)
    page.wait_for_url(re.compile(r"/connections/$"))
    assert "Active" in page.locator(".connection").inner_text()
    assert Connection.objects.get(pk=connection.pk).status == Connection.Status.ACTIVE

    # The operator's dashboard shows the day's syncs.
    sign_in(page, portal, "root", "/admin/")
    page.wait_for_selector("svg[role=img]")
    shot(page, "6-operator-dashboard")
