"""Admin consent takes nothing on trust from its redirect: the `tenant` it names must be a tenant
(a GUID or a domain name) before it goes into a token URL or onto a connection, and consent is
offered and completed only for apps with application permissions."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from connections.connect import is_dns_domain
from connections.models import AuthorizationAttempt, Connection
from tests.conftest import ADELE, MS_CLIENT_ID, MS_TENANT
from tests.flows import follow_back

pytestmark = pytest.mark.django_db


def start_consent(client, contoso) -> str:
    client.force_login(contoso.admin)
    response = client.post(reverse("connections:admin_consent", args=[contoso.app.pk]))
    assert response.status_code == 302
    return response["Location"]


def consent_callback(client, consent_url: str, tenant: str):
    state = parse_qs(urlsplit(consent_url).query)["state"][0]
    return client.get(
        reverse("connections:callback"),
        {"state": state, "admin_consent": "True", "tenant": tenant, "scope": ".default"},
    )


def app_tokens_asked(microsoft) -> int:
    return microsoft.control.token_request_count(MS_CLIENT_ID, "client_credentials")


@pytest.mark.parametrize(
    "tenant",
    [
        "contoso.example/../../common?x=1#",
        f"{MS_TENANT}/../common",
        "common",
        "organizations",
        "contoso.example:443",
        " contoso.example",
        "contoso.example.",
        "contoso..example",
        "-contoso.example",
        "contoso.example\n",
        "contoso.exa mple",
        "http://evil.example",
        f"{{{MS_TENANT}}}",
        "contoso.123",
        "a" * 64 + ".example",
        "",
    ],
)
def test_a_consent_naming_no_valid_tenant_is_refused_before_any_token_request(
    client, microsoft, contoso, tenant
):
    consent_url = start_consent(client, contoso)
    asked = app_tokens_asked(microsoft)
    response = consent_callback(client, consent_url, tenant)
    assert response.status_code == 400
    text = response.text
    assert "no valid tenant" in text or "did not confirm admin consent" in text
    assert not Connection.objects.filter(kind=Connection.Kind.APPLICATION).exists()
    assert app_tokens_asked(microsoft) == asked
    assert AuthorizationAttempt.objects.get().outcome == AuthorizationAttempt.Outcome.FAILED


def test_a_consent_naming_the_tenant_by_domain_is_verified_and_stored(client, microsoft, contoso):
    # An app pinned to no tenant (a domain is not compared with a pinned GUID: refused then).
    contoso.app.directory_tenant_id = ""
    contoso.app.save()
    consent_url = start_consent(client, contoso)
    response = consent_callback(client, consent_url, "Contoso.Example")
    assert response.status_code == 302, response.text
    connection = Connection.objects.get(kind=Connection.Kind.APPLICATION)
    assert connection.ms_tenant_id == "contoso.example"


def test_a_consent_naming_the_tenant_by_guid_in_capitals_is_stored_in_lower_case(
    client, microsoft, contoso
):
    consent_url = start_consent(client, contoso)
    response = consent_callback(client, consent_url, MS_TENANT.upper())
    assert response.status_code == 302, response.text
    assert Connection.objects.get(kind=Connection.Kind.APPLICATION).ms_tenant_id == MS_TENANT


@pytest.mark.parametrize(
    "name",
    ["contoso.onmicrosoft.com", "CONTOSO.example", "xn--bcher-kva.example", "a-b.c-d.example"],
)
def test_domain_names_pass_the_strict_check(name):
    assert is_dns_domain(name)


def test_the_strict_domain_check_keeps_dns_lengths():
    assert is_dns_domain(("a" * 63 + ".") * 3 + "b" * 61)  # 253 characters
    assert not is_dns_domain(("a" * 63 + ".") * 3 + "b" * 62)
    assert not is_dns_domain("contoso.\u212aom")  # a Kelvin sign lower-cases to "k"


def test_admin_consent_is_not_offered_for_an_app_without_application_permissions(client, contoso):
    contoso.app.use_application_permissions = False
    contoso.app.save()
    client.force_login(contoso.admin)
    response = client.post(reverse("connections:admin_consent", args=[contoso.app.pk]))
    assert response.status_code == 403
    assert not AuthorizationAttempt.objects.exists()


def test_admin_consent_is_not_completed_for_an_app_without_application_permissions(
    client, microsoft, contoso
):
    consent_url = start_consent(client, contoso)
    # Application permissions were turned off while the administrator was at Microsoft.
    contoso.app.use_application_permissions = False
    contoso.app.save()
    response = follow_back(client, microsoft.control.sign_in(consent_url, ADELE))
    assert response.status_code == 400
    assert "has no application permissions" in response.text
    assert not Connection.objects.filter(kind=Connection.Kind.APPLICATION).exists()
