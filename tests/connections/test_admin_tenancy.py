"""A tenant administrator sees and edits only their own tenant's rows in the admin."""

from __future__ import annotations

import pytest
from django.urls import reverse

from connections.models import AuditEvent, ClientSecret, Connection, EntraApp

pytestmark = pytest.mark.django_db


@pytest.fixture
def events(acme, globex):
    return {
        world.tenant.name: AuditEvent.objects.create(
            tenant=world.tenant, app=world.app, kind="app_created", message=f"{world.tenant} app"
        )
        for world in (acme, globex)
    }


def rows_of(world, events):
    return {
        "entraapp": world.app,
        "connection": world.connection,
        "auditevent": events[world.tenant.name],
        "tenant": world.tenant,
    }


@pytest.mark.parametrize("model", ["entraapp", "connection", "auditevent", "tenant"])
def test_list_shows_only_own_tenant(client, acme, globex, events, model):
    client.force_login(acme.admin)
    response = client.get(reverse(f"admin:connections_{model}_changelist"))
    assert response.status_code == 200
    mine, theirs = rows_of(acme, events)[model], rows_of(globex, events)[model]
    assert reverse(f"admin:connections_{model}_change", args=[mine.pk]) in response.text
    assert reverse(f"admin:connections_{model}_change", args=[theirs.pk]) not in response.text
    assert "Globex" not in response.text


@pytest.mark.parametrize("model", ["entraapp", "connection", "auditevent", "tenant"])
@pytest.mark.parametrize("view", ["change", "delete", "history"])
def test_other_tenants_rows_by_url_are_404(client, acme, globex, events, model, view):
    client.force_login(acme.admin)
    theirs = rows_of(globex, events)[model]
    url = reverse(f"admin:connections_{model}_{view}", args=[theirs.pk])
    assert client.get(url).status_code in (403, 404)
    response = client.post(url, {"post": "yes", "name": "Hijacked"})
    assert response.status_code in (403, 404)
    assert "Globex" not in response.text


def test_other_tenants_rows_survive_post_attempts(client, acme, globex, events):
    client.force_login(acme.admin)
    for model, row in rows_of(globex, events).items():
        client.post(reverse(f"admin:connections_{model}_delete", args=[row.pk]), {"post": "yes"})
        client.post(reverse(f"admin:connections_{model}_change", args=[row.pk]), {"name": "X"})
    assert EntraApp.objects.get(pk=globex.app.pk).name == "Globex mail sync"
    assert Connection.objects.filter(pk=globex.connection.pk).exists()
    assert AuditEvent.objects.filter(pk=events["Globex"].pk).exists()


def test_bulk_delete_action_cannot_reach_other_tenants(client, acme, globex):
    client.force_login(acme.admin)
    client.post(
        reverse("admin:connections_entraapp_changelist"),
        {"action": "delete_selected", "_selected_action": [globex.app.pk], "post": "yes"},
    )
    assert EntraApp.objects.filter(pk=globex.app.pk).exists()


def test_verify_view_cannot_reach_other_tenants(client, acme, globex):
    client.force_login(acme.admin)
    url = reverse("admin:connections_entraapp_verify", args=[globex.app.pk])
    assert client.post(url).status_code == 404
    assert EntraApp.objects.get(pk=globex.app.pk).credentials_checked_at is None


def test_add_form_offers_only_own_tenant(client, acme, globex):
    client.force_login(acme.admin)
    response = client.get(reverse("admin:connections_entraapp_add"))
    assert response.status_code == 200
    assert "Acme" in response.text
    assert "Globex" not in response.text


def test_tenant_admin_cannot_create_an_app_in_another_tenant(client, acme, globex):
    client.force_login(acme.admin)
    response = client.post(
        reverse("admin:connections_entraapp_add"),
        {
            "tenant": globex.tenant.pk,
            "name": "Sneaky",
            "client_id": "cccccccc-0000-4000-8000-000000000003",
            "cloud": "global",
            "authority": "organizations",
            "delegated_scopes": "User.Read",
            "graph_version": "v1.0",
            "default_prompt": "select_account",
            "response_mode": "form_post",
            "is_active": "on",
            "secrets-TOTAL_FORMS": "0",
            "secrets-INITIAL_FORMS": "0",
            "certificates-TOTAL_FORMS": "0",
            "certificates-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200  # the form comes back: Globex is not a valid choice
    assert "Select a valid choice" in response.text
    assert not EntraApp.objects.filter(name="Sneaky").exists()


def test_audit_trail_is_read_only(client, acme, events):
    client.force_login(acme.admin)
    event = events["Acme"]
    assert (
        client.get(reverse("admin:connections_auditevent_change", args=[event.pk])).status_code
        == 200
    )
    client.post(reverse("admin:connections_auditevent_change", args=[event.pk]), {"message": "x"})
    assert client.get(reverse("admin:connections_auditevent_add")).status_code == 403
    assert (
        client.post(
            reverse("admin:connections_auditevent_delete", args=[event.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert AuditEvent.objects.get(pk=event.pk).message == "Acme app"


def test_members_have_no_admin_access(client, acme):
    client.force_login(acme.member)
    response = client.get(reverse("admin:connections_entraapp_changelist"))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_staff_without_an_admin_membership_sees_nothing(client, acme, django_user_model):
    staff = django_user_model.objects.create_user("drifter", is_staff=True)
    client.force_login(staff)
    assert client.get(reverse("admin:connections_entraapp_changelist")).status_code == 403
    index = client.get(reverse("admin:index"))
    assert "Entra app registrations" not in index.text


def test_operator_sees_every_tenant(client, operator, acme, globex):
    client.force_login(operator)
    response = client.get(reverse("admin:connections_entraapp_changelist"))
    assert "Acme mail sync" in response.text
    assert "Globex mail sync" in response.text


def test_no_secret_or_token_in_any_admin_page(client, operator, acme, globex, events):
    ClientSecret.objects.filter(pk=acme.secret.pk).update(verification_detail="works")
    plaintexts = [
        "AcmeSecretValue~1",
        "GlobexSecretValue~2",
        "Acme-access-token-value",
        "Acme-refresh-token-value",
        "Globex-access-token-value",
        "Globex-refresh-token-value",
    ]
    pages = [reverse("admin:index")]
    for world in (acme, globex):
        for model, row in rows_of(world, events).items():
            pages += [
                reverse(f"admin:connections_{model}_changelist"),
                reverse(f"admin:connections_{model}_change", args=[row.pk]),
            ]
    pages.append(reverse("admin:connections_entraapp_add"))
    for user in (operator, acme.admin):
        client.force_login(user)
        for page in pages:
            response = client.get(page)
            for secret in plaintexts:
                assert secret not in response.text, f"{secret} leaked on {page}"
            assert "gAAAAA" not in response.text, f"ciphertext on {page}"


def test_app_page_shows_secret_as_set_with_expiry_and_redirect_uri(client, acme):
    client.force_login(acme.admin)
    response = client.get(reverse("admin:connections_entraapp_change", args=[acme.app.pk]))
    assert f"set, expires on {acme.secret.expires_on:%Y-%m-%d}" in response.text
    assert acme.app.redirect_uri in response.text
    assert "Certificates &amp; secrets" in response.text
    assert "Verify credentials" in response.text
