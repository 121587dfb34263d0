"""Verify credentials: a client-credentials token request, explained in an admin's words."""

from __future__ import annotations

import pytest
from django.urls import reverse

from connections.models import AuditEvent, ClientSecret, EntraApp
from devtools.localservices import free_port
from tests.conftest import MS_CLIENT_ID, MS_SECRET_ID

pytestmark = pytest.mark.django_db


def verify(client, contoso):
    client.force_login(contoso.admin)
    response = client.post(
        reverse("admin:connections_entraapp_verify", args=[contoso.app.pk]), follow=True
    )
    contoso.app.refresh_from_db()
    return response


def test_working_secret(client, contoso):
    response = verify(client, contoso)
    assert contoso.app.credentials_status == EntraApp.CredentialStatus.OK
    assert "works." in response.text
    secret = ClientSecret.objects.get(app=contoso.app)
    assert secret.verification_ok is True
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.CREDENTIALS_VERIFIED)
    assert event.actor == contoso.admin and event.app == contoso.app


def test_invalid_secret_aadsts7000215(client, contoso):
    ClientSecret.objects.filter(app=contoso.app).delete()
    ClientSecret.objects.create(
        app=contoso.app, value="wrong-secret", hint="wro", expires_on="2031-01-01"
    )
    response = verify(client, contoso)
    assert contoso.app.credentials_status == EntraApp.CredentialStatus.BROKEN
    assert "The client secret is wrong" in response.text and "AADSTS7000215" in response.text
    assert "Secret ID" in contoso.app.credentials_detail
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.CREDENTIALS_FAILED).exists()


def test_expired_secret_aadsts7000222(client, microsoft, contoso):
    microsoft.control.set_secret_expiry(MS_CLIENT_ID, MS_SECRET_ID, expired=True)
    response = verify(client, contoso)
    assert contoso.app.credentials_status == EntraApp.CredentialStatus.BROKEN
    assert "The client secret has expired" in response.text and "AADSTS7000222" in response.text


def test_tenant_not_found_aadsts90002(client, contoso):
    contoso.app.directory_tenant_id = "00000000-0000-4000-8000-00000000abcd"
    contoso.app.save()
    response = verify(client, contoso)
    assert "Tenant not found" in response.text and "AADSTS90002" in response.text


def test_unreachable_login_host(client, contoso):
    contoso.app.login_base_url = f"http://127.0.0.1:{free_port()}"
    contoso.app.save()
    response = verify(client, contoso)
    assert contoso.app.credentials_status == EntraApp.CredentialStatus.BROKEN
    assert "could not be reached" in response.text


def test_no_home_tenant_is_explained_without_a_request(client, microsoft, contoso):
    contoso.app.directory_tenant_id = ""
    contoso.app.save()
    microsoft.control.reset_counters()
    response = verify(client, contoso)
    assert "Enter the Directory (tenant) ID" in response.text
    assert microsoft.control.token_request_count(MS_CLIENT_ID) == 0


def test_list_action_verifies_selected_apps(client, contoso):
    client.force_login(contoso.admin)
    client.post(
        reverse("admin:connections_entraapp_changelist"),
        {"action": "verify_credentials", "_selected_action": [contoso.app.pk]},
    )
    contoso.app.refresh_from_db()
    assert contoso.app.credentials_status == EntraApp.CredentialStatus.OK
