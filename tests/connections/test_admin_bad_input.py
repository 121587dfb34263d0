"""Bad input in the admin's app registration is refused with the field named, nothing is saved,
and what is secret (a secret's value, a private key) never comes back in the page or in an error
report."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django.views.debug import SafeExceptionReporterFilter

from connections.models import AppCertificate, ClientSecret, EntraApp
from tests.connections.test_admin_app_registration import form
from tests.connections.test_certificates import certificate_form, self_signed

pytestmark = pytest.mark.django_db


def add(client, persona, **overrides):
    client.force_login(persona.admin)
    return client.post(
        reverse("admin:connections_entraapp_add"), form(tenant=persona.tenant.pk, **overrides)
    )


def assert_refused(response, message):
    assert response.status_code == 200
    assert message in response.text, response.text
    assert not EntraApp.objects.filter(name="Contoso sync").exists()
    assert not ClientSecret.objects.filter(description="first").exists()


def test_a_secret_that_has_already_expired_is_refused(client, acme):
    past = timezone.localdate() - timedelta(days=3)
    response = add(client, acme, **{"secrets-0-expires_on": past.isoformat()})
    assert_refused(response, f"Expires on {past:%Y-%m-%d}: that date has passed")


def test_a_stored_secret_cannot_be_moved_into_the_past(client, acme):
    client.force_login(acme.admin)
    app, secret = acme.app, acme.secret
    data = form(
        tenant=acme.tenant.pk,
        name=app.name,
        client_id=app.client_id,
        **{
            "secrets-INITIAL_FORMS": "1",
            "secrets-0-id": secret.pk,
            "secrets-0-app": app.pk,
            "secrets-0-description": secret.description,
            "secrets-0-new_value": "",
            "secrets-0-expires_on": (timezone.localdate() - timedelta(days=1)).isoformat(),
        },
    )
    response = client.post(reverse("admin:connections_entraapp_change", args=[app.pk]), data)
    assert "that date has passed" in response.text
    assert ClientSecret.objects.get(pk=secret.pk).expires_on == secret.expires_on


def test_an_app_whose_old_secret_expired_still_saves(client, acme):
    """Only a date typed now must be in the future: a secret that expired since is kept as it
    is, and the app's other fields still change."""
    expired = timezone.localdate() - timedelta(days=10)
    ClientSecret.objects.filter(pk=acme.secret.pk).update(expires_on=expired)
    client.force_login(acme.admin)
    app = acme.app
    data = form(
        tenant=acme.tenant.pk,
        name="Renamed",
        client_id=app.client_id,
        **{
            "secrets-INITIAL_FORMS": "1",
            "secrets-0-id": acme.secret.pk,
            "secrets-0-app": app.pk,
            "secrets-0-description": acme.secret.description,
            "secrets-0-new_value": "",
            "secrets-0-expires_on": expired.isoformat(),
        },
    )
    response = client.post(reverse("admin:connections_entraapp_change", args=[app.pk]), data)
    assert response.status_code == 302, response.text
    assert EntraApp.objects.get(pk=app.pk).name == "Renamed"


def test_twenty_thousand_scopes_are_refused(client, acme):
    scopes = " ".join(f"Scope{n}.Read" for n in range(20_000))
    response = add(client, acme, delegated_scopes=scopes)
    assert_refused(response, "The scopes are at most 4000 characters")


def test_more_than_a_hundred_scopes_are_refused_even_when_short(client, acme):
    scopes = " ".join(f"S{n}.R" for n in range(150))
    assert len(scopes) < 4000
    response = add(client, acme, delegated_scopes=scopes)
    assert_refused(response, "At most 100 scopes can be requested: found 150.")


def test_a_200_kb_secret_is_refused(client, acme):
    response = add(client, acme, **{"secrets-0-new_value": "x" * 200_000})
    assert_refused(response, "The secret&#x27;s value is at most 256 characters")
    assert "x" * 300 not in response.text


def test_a_secret_with_line_breaks_is_refused(client, acme):
    response = add(client, acme, **{"secrets-0-new_value": "abc\ndef"})
    assert_refused(response, "has spaces, line breaks or control characters")


@pytest.mark.parametrize(
    ("field", "limit"), [("name", 200), ("description", 100), ("directory_tenant_id", 36)]
)
def test_every_free_text_field_has_a_length_limit(client, acme, field, limit):
    key = f"secrets-0-{field}" if field == "description" else field
    response = add(client, acme, **{key: "a" * (limit + 1)})
    assert_refused(response, f"at most {limit} characters")


def test_a_huge_certificate_is_refused_with_its_field_named(client, contoso):
    _, key_pem = self_signed()
    client.force_login(contoso.admin)
    response = client.post(
        reverse("admin:connections_entraapp_change", args=[contoso.app.pk]),
        certificate_form("A" * 20_000, key_pem, contoso.app),
    )
    assert "The certificate is at most 16384 characters of PEM" in response.text
    assert not AppCertificate.objects.exists()


def test_a_private_key_is_never_echoed_back_on_a_form_error(client, contoso):
    cert_pem, _ = self_signed()
    _, other_key = self_signed()
    client.force_login(contoso.admin)
    response = client.post(
        reverse("admin:connections_entraapp_change", args=[contoso.app.pk]),
        certificate_form(cert_pem, other_key, contoso.app),
    )
    assert "does not belong to the certificate" in response.text
    body = other_key.strip().splitlines()[1]  # a line of the key's base64
    assert body not in response.text
    assert "PRIVATE KEY" not in response.text
    assert cert_pem.splitlines()[1] in response.text  # the public certificate may come back


def test_the_secret_views_hide_their_posted_values_from_error_reports(client, acme):
    response = add(client, acme, **{"secrets-0-expires_on": "not a date"})
    request = response.wsgi_request
    shown = SafeExceptionReporterFilter().get_post_parameters(request)
    assert shown["secrets-0-new_value"] != "Sup3r~SecretValue"
    assert "Sup3r~SecretValue" not in str(dict(shown))


def test_the_member_form_hides_passwords_from_error_reports(client, acme):
    client.force_login(acme.admin)
    response = client.post(
        reverse("admin:connections_member_add"),
        {"username": "", "password1": "Correct-Horse-9", "password2": "Correct-Horse-9"},
    )
    shown = SafeExceptionReporterFilter().get_post_parameters(response.wsgi_request)
    assert shown["password1"] != "Correct-Horse-9"


def test_the_callback_hides_the_authorization_code_from_error_reports(client):
    response = client.post(reverse("connections:callback"), {"code": "0.AUTHCODE", "state": "x"})
    shown = SafeExceptionReporterFilter().get_post_parameters(response.wsgi_request)
    assert shown["code"] != "0.AUTHCODE"
