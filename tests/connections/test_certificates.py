"""Certificate credentials: a client assertion signed with the app's key (x5t#S256)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from django.urls import reverse

from connections import credentials, tokens
from connections.models import AppCertificate, ClientSecret, Connection
from tests.conftest import MS_CLIENT_ID
from tests.flows import connected

pytestmark = pytest.mark.django_db


def self_signed(days: int = 365) -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "graphport-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert_pem, key_pem


def certificate_form(cert_pem, key_pem, app):
    data = {
        "tenant": app.tenant.pk,
        "name": app.name,
        "client_id": app.client_id,
        "directory_tenant_id": app.directory_tenant_id,
        "cloud": "custom",
        "login_base_url": app.login_base_url,
        "graph_base_url": app.graph_base_url,
        "authority": app.authority,
        "delegated_scopes": app.delegated_scopes,
        "graph_version": "v1.0",
        "default_prompt": "",
        "response_mode": "form_post",
        "is_active": "on",
        "secrets-TOTAL_FORMS": "0",
        "secrets-INITIAL_FORMS": "0",
        "certificates-TOTAL_FORMS": "1",
        "certificates-INITIAL_FORMS": "0",
        "certificates-0-description": "2026 cert",
        "certificates-0-certificate_pem": cert_pem,
        "certificates-0-new_private_key": key_pem,
    }
    return data


def test_admin_adds_a_certificate_and_tokens_use_it(client, microsoft, contoso):
    cert_pem, key_pem = self_signed()
    microsoft.control.add_certificate(MS_CLIENT_ID, cert_pem)
    client.force_login(contoso.admin)
    response = client.post(
        reverse("admin:connections_entraapp_change", args=[contoso.app.pk]),
        certificate_form(cert_pem, key_pem, contoso.app),
    )
    assert response.status_code == 302, response.text
    certificate = AppCertificate.objects.get()
    assert certificate.expires_on > datetime.now(UTC).date()
    assert len(certificate.thumbprint_sha1) == 40
    page = client.get(reverse("admin:connections_entraapp_change", args=[contoso.app.pk]))
    assert "PRIVATE KEY" not in page.text

    # Only the certificate is left: verify and the code flow both work with it.
    ClientSecret.objects.all().delete()
    assert credentials.verify(contoso.app).ok
    connection = connected(client, microsoft, contoso.member, contoso.app)
    Connection.objects.filter(pk=connection.pk).update(access_token_expires_at=None)
    assert tokens.access_token(connection.pk) != connection.access_token


def test_the_assertion_carries_x5t_s256_and_the_token_endpoint_as_audience(contoso):
    cert_pem, key_pem = self_signed()
    facts = credentials.describe_certificate(cert_pem)
    certificate = AppCertificate(
        app=contoso.app,
        certificate_pem=cert_pem,
        private_key=key_pem,
        thumbprint_sha256=facts["thumbprint_sha256"],
        thumbprint_sha1=facts["thumbprint_sha1"],
        expires_on=facts["expires_on"],
    )
    token_url = contoso.app.token_url
    assertion = credentials.client_assertion(certificate, token_url, MS_CLIENT_ID)
    assert jwt.get_unverified_header(assertion)["x5t#S256"] == facts["thumbprint_sha256"]
    claims = jwt.decode(assertion, facts["public_key"], algorithms=["RS256"], audience=token_url)
    assert claims["iss"] == claims["sub"] == MS_CLIENT_ID


def test_a_key_that_does_not_match_the_certificate_is_refused(client, contoso):
    cert_pem, _ = self_signed()
    _, other_key = self_signed()
    client.force_login(contoso.admin)
    response = client.post(
        reverse("admin:connections_entraapp_change", args=[contoso.app.pk]),
        certificate_form(cert_pem, other_key, contoso.app),
    )
    assert "does not belong to the certificate" in response.text
    assert not AppCertificate.objects.exists()


def test_a_certificate_unknown_to_azure_fails_verification_in_words(microsoft, contoso):
    cert_pem, key_pem = self_signed()
    facts = credentials.describe_certificate(cert_pem)
    ClientSecret.objects.all().delete()
    AppCertificate.objects.create(
        app=contoso.app,
        certificate_pem=cert_pem,
        private_key=key_pem,
        thumbprint_sha256=facts["thumbprint_sha256"],
        thumbprint_sha1=facts["thumbprint_sha1"],
        expires_on=facts["expires_on"],
    )
    result = credentials.verify(contoso.app)
    assert not result.ok
    assert "AADSTS700027" in result.message
