"""An app registration's credentials: client secrets and certificates, used in turn.

Certificates come first (Microsoft recommends them over secrets), then unexpired secrets, the
one added last first: a secret or certificate added before the old one expires takes over at
once, and the old one stays as a fallback until it expires, so rotation needs no downtime.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.db import transaction
from django.utils import timezone

from connections import audit, identity, webhook_events
from connections.identity import FailureClass, IdentityError
from connections.models import AppCertificate, AuditEvent, ClientSecret, Connection, EntraApp

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = timedelta(minutes=10)
T = TypeVar("T")


class NoCredential(IdentityError):
    """The app has no unexpired secret or certificate: nothing to send."""

    @property
    def failure_class(self) -> FailureClass:
        return FailureClass.APP_CREDENTIALS

    @property
    def explanation(self) -> str:
        return self.description


@dataclass
class Credential:
    label: str
    record: ClientSecret | AppCertificate

    def body(self, token_url: str, client_id: str) -> dict[str, str]:
        """The token request's fields that prove who the client is."""
        if isinstance(self.record, ClientSecret):
            return {"client_secret": self.record.value}
        return {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(self.record, token_url, client_id),
        }


def client_assertion(certificate: AppCertificate, token_url: str, client_id: str) -> str:
    """A JWT signed with the certificate's private key (Microsoft's certificate credentials)."""
    now = datetime.now(UTC)
    claims = {
        "aud": token_url,
        "iss": client_id,
        "sub": client_id,
        "jti": str(uuid.uuid4()),
        "nbf": now,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    }
    headers = {"x5t#S256": certificate.thumbprint_sha256, "typ": "JWT"}
    return jwt.encode(claims, certificate.private_key, algorithm="RS256", headers=headers)


def describe_certificate(pem: str) -> dict:
    """Thumbprints and expiry of a PEM certificate, or ValueError in words for the form."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise ValueError("This is not a PEM certificate (-----BEGIN CERTIFICATE-----).") from exc
    der = cert.public_bytes(serialization.Encoding.DER)
    return {
        "thumbprint_sha256": base64.urlsafe_b64encode(hashlib.sha256(der).digest())
        .rstrip(b"=")
        .decode(),
        # The Azure portal shows the SHA-1 thumbprint in hex.
        "thumbprint_sha1": hashlib.sha1(der).hexdigest().upper(),  # noqa: S324
        "expires_on": cert.not_valid_after_utc.date(),
        "public_key": cert.public_key(),
    }


def for_app(app: EntraApp) -> list[Credential]:
    today = timezone.localdate()
    certificates = [
        Credential(f"Certificate {c.thumbprint_sha1[:8]}… (expires {c.expires_on:%Y-%m-%d})", c)
        for c in app.certificates.all()
        if c.expires_on >= today
    ]
    secrets = [
        Credential(f"Secret {s.hint}… (expires {s.expires_on:%Y-%m-%d})", s)
        for s in app.usable_secrets
    ]
    return certificates + secrets


def with_each(app: EntraApp, token_url: str, call: Callable[[dict[str, str]], T]) -> T:
    """Call the token endpoint with each credential in turn until one is accepted; any failure
    that is not about the credential ends the search at once."""
    credentials = for_app(app)
    if not credentials:
        raise NoCredential(
            error="no_credential",
            description="The app has no unexpired client secret or certificate: a tenant "
            "administrator must add one.",
        )
    last: IdentityError | None = None
    for credential in credentials:
        try:
            return call(credential.body(token_url, app.client_id))
        except IdentityError as exc:
            if exc.failure_class != FailureClass.APP_CREDENTIALS:
                raise
            last = exc
    assert last is not None
    raise last


@dataclass
class Verification:
    ok: bool
    message: str


def verify(app: EntraApp, actor=None) -> Verification:
    """Ask for an app-only token with each credential; record the outcome on the app, on each
    credential, and in the audit trail. A working app has its paused refreshes resumed."""
    now = timezone.now()
    tenant = app.credential_tenant
    credentials = for_app(app)
    if tenant is None:
        result = Verification(
            False,
            f"Cannot verify: the authority is {app.authority!r}, so Graphport does not know the "
            "app's home tenant. Enter the Directory (tenant) ID from the app's Overview page.",
        )
    elif not credentials:
        result = Verification(
            False,
            "No unexpired client secret or certificate: add the secret's value and its expiry "
            "date, or a certificate.",
        )
    else:
        # The app works when one credential works: token requests fall back to it. Each
        # credential's own outcome is kept on its row and listed in the message.
        outcomes = [_verify_one(app, tenant, credential, now) for credential in credentials]
        result = Verification(
            any(ok for ok, _ in outcomes), " ".join(message for _, message in outcomes)
        )
    was_broken = app.credentials_status == EntraApp.CredentialStatus.BROKEN
    app.credentials_status = (
        EntraApp.CredentialStatus.OK if result.ok else EntraApp.CredentialStatus.BROKEN
    )
    app.credentials_checked_at = now
    app.credentials_detail = result.message
    with transaction.atomic():
        app.save(
            update_fields=["credentials_status", "credentials_checked_at", "credentials_detail"]
        )
        if not result.ok and not was_broken:
            webhook_events.credentials_broken(app, result.message)
    audit.record(
        AuditEvent.Kind.CREDENTIALS_VERIFIED if result.ok else AuditEvent.Kind.CREDENTIALS_FAILED,
        result.message,
        app=app,
        actor=actor,
    )
    if result.ok and was_broken:
        resume_refreshes(app, actor)
    return result


def resume_refreshes(app: EntraApp, actor=None) -> int:
    """The app's credentials work again: its paused connections become active, and the next
    dispatch refreshes those that are due."""
    resumed = Connection.objects.filter(
        app=app, status=Connection.Status.APP_CREDENTIALS_BROKEN
    ).update(status=Connection.Status.ACTIVE, status_reason="", next_refresh_at=None)
    audit.record(
        AuditEvent.Kind.APP_RESUMED,
        f"Credentials verified: refreshes resumed for {resumed} connection(s).",
        app=app,
        actor=actor,
    )
    return resumed


def _verify_one(app: EntraApp, tenant: str, credential: Credential, now) -> tuple[bool, str]:
    token_url = app.token_url_for(tenant)
    try:
        identity.app_token(
            token_url, app.client_id, credential.body(token_url, app.client_id), app.app_only_scope
        )
    except IdentityError as exc:
        ok = False
        detail = f"{credential.label}: {exc.explanation}"
        if exc.code:
            detail += f" [{exc.aadsts}]"
        if exc.trace_id:
            detail += f" Trace ID {exc.trace_id}."
    else:
        ok, detail = True, f"{credential.label}: works."
    record = credential.record
    record.verified_at = now
    record.verification_ok = ok
    record.verification_detail = detail
    record.save(update_fields=["verified_at", "verification_ok", "verification_detail"])
    return ok, detail
