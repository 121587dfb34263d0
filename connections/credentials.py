"""Checking an app registration's credentials with a client-credentials token request."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone

from connections import audit, identity
from connections.models import AuditEvent, ClientSecret, EntraApp


@dataclass
class Verification:
    ok: bool
    message: str


def verify(app: EntraApp, actor=None) -> Verification:
    """Ask for an app-only token with each unexpired secret; record the outcome on the app,
    on each secret, and in the audit trail."""
    now = timezone.now()
    tenant = app.credential_tenant
    secrets = app.usable_secrets
    if tenant is None:
        result = Verification(
            False,
            f"Cannot verify: the authority is {app.authority!r}, so Graphport does not know the "
            "app's home tenant. Enter the Directory (tenant) ID from the app's Overview page.",
        )
    elif not secrets:
        result = Verification(
            False, "No unexpired client secret: add the secret's value and its expiry date."
        )
    else:
        outcomes = [_verify_secret(app, tenant, secret, now) for secret in secrets]
        result = Verification(
            all(ok for ok, _ in outcomes), " ".join(message for _, message in outcomes)
        )
    app.credentials_status = (
        EntraApp.CredentialStatus.OK if result.ok else EntraApp.CredentialStatus.BROKEN
    )
    app.credentials_checked_at = now
    app.credentials_detail = result.message
    app.save(update_fields=["credentials_status", "credentials_checked_at", "credentials_detail"])
    audit.record(
        AuditEvent.Kind.CREDENTIALS_VERIFIED if result.ok else AuditEvent.Kind.CREDENTIALS_FAILED,
        result.message,
        app=app,
        actor=actor,
    )
    return result


def _verify_secret(app: EntraApp, tenant: str, secret: ClientSecret, now) -> tuple[bool, str]:
    label = f"Secret {secret.hint}… (expires {secret.expires_on:%Y-%m-%d})"
    try:
        identity.app_token(
            app.token_url_for(tenant), app.client_id, secret.value, app.app_only_scope
        )
    except identity.IdentityError as exc:
        ok = False
        detail = f"{label}: {exc.explanation}"
        if exc.code:
            detail += f" [{exc.aadsts}]"
        if exc.trace_id:
            detail += f" Trace ID {exc.trace_id}."
    else:
        ok, detail = True, f"{label}: works."
    secret.verified_at = now
    secret.verification_ok = ok
    secret.verification_detail = detail
    secret.save(update_fields=["verified_at", "verification_ok", "verification_detail"])
    return ok, detail
