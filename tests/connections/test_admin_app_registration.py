"""A tenant administrator registers an app and its secret through the admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from connections.models import AuditEvent, ClientSecret, EntraApp

pytestmark = pytest.mark.django_db


def form(**overrides):
    data = {
        "tenant": "",
        "name": "Contoso sync",
        "client_id": "dddddddd-0000-4000-8000-000000000004",
        "directory_tenant_id": "",
        "cloud": "global",
        "login_base_url": "",
        "graph_base_url": "",
        "authority": "organizations",
        "delegated_scopes": "User.Read Mail.Read",
        "graph_version": "v1.0",
        "default_prompt": "select_account",
        "response_mode": "form_post",
        "is_active": "on",
        "secrets-TOTAL_FORMS": "1",
        "secrets-INITIAL_FORMS": "0",
        "certificates-TOTAL_FORMS": "0",
        "certificates-INITIAL_FORMS": "0",
        "secrets-0-description": "first",
        "secrets-0-new_value": "Sup3r~SecretValue",
        "secrets-0-expires_on": (timezone.localdate() + timedelta(days=365)).isoformat(),
    }
    data.update(overrides)
    return data


def test_tenant_admin_registers_an_app_with_a_secret(client, acme):
    client.force_login(acme.admin)
    response = client.post(reverse("admin:connections_entraapp_add"), form(tenant=acme.tenant.pk))
    assert response.status_code == 302, response.text
    app = EntraApp.objects.get(name="Contoso sync")
    assert app.tenant == acme.tenant
    secret = app.secrets.get()
    assert secret.value == "Sup3r~SecretValue"
    assert secret.hint == "Sup"
    kinds = set(AuditEvent.objects.filter(app=app).values_list("kind", flat=True))
    assert kinds == {AuditEvent.Kind.APP_CREATED, AuditEvent.Kind.SECRET_ADDED}
    assert AuditEvent.objects.filter(app=app).first().actor == acme.admin

    page = client.get(reverse("admin:connections_entraapp_change", args=[app.pk]))
    assert "Sup3r~SecretValue" not in page.text


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("client_id", "contoso-app", "is not a GUID"),
        ("delegated_scopes", ".default Mail.Read", "AADSTS70011"),
        ("authority", "not a tenant", "is not an authority"),
    ],
)
def test_bad_input_is_refused_with_its_message_and_nothing_saved(
    client, acme, field, value, message
):
    client.force_login(acme.admin)
    response = client.post(
        reverse("admin:connections_entraapp_add"), form(tenant=acme.tenant.pk, **{field: value})
    )
    assert response.status_code == 200
    assert message in response.text
    assert not EntraApp.objects.filter(name="Contoso sync").exists()
    assert not ClientSecret.objects.filter(description="first").exists()


def test_a_new_secret_row_needs_its_value(client, acme):
    client.force_login(acme.admin)
    response = client.post(
        reverse("admin:connections_entraapp_add"),
        form(tenant=acme.tenant.pk, **{"secrets-0-new_value": ""}),
    )
    assert "Paste the secret&#x27;s value." in response.text
    assert not EntraApp.objects.filter(name="Contoso sync").exists()


def test_a_stored_secret_cannot_be_overwritten(client, acme):
    client.force_login(acme.admin)
    app = acme.app
    data = form(
        tenant=acme.tenant.pk,
        name=app.name,
        client_id=app.client_id,
        **{
            "secrets-INITIAL_FORMS": "1",
            "secrets-0-id": acme.secret.pk,
            "secrets-0-app": app.pk,
            "secrets-0-description": "primary",
            "secrets-0-new_value": "Replacement~Value",
            "secrets-0-expires_on": acme.secret.expires_on.isoformat(),
        },
    )
    response = client.post(reverse("admin:connections_entraapp_change", args=[app.pk]), data)
    assert "A stored secret cannot be changed" in response.text
    assert ClientSecret.objects.get(pk=acme.secret.pk).value == "AcmeSecretValue~1"
