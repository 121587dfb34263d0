"""Linked Microsoft accounts and the trips to Microsoft that make them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from connections.models.apps import EntraApp
from connections.models.tenants import Tenant
from core.encryption import EncryptedTextField


class Connection(models.Model):
    """A linked Microsoft account (delegated) or a tenant-wide app-only grant (application)."""

    class Kind(models.TextChoices):
        DELEGATED = "delegated", "Delegated (a user's account)"
        APPLICATION = "application", "Application (app-only, tenant-wide)"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        RECONNECT_NEEDED = "reconnect_needed", "Reconnect needed"
        APP_CREDENTIALS_BROKEN = "app_credentials_broken", "App credentials broken"
        DISABLED = "disabled", "Disabled"
        REVOKED = "revoked", "Disconnected"

    # The statuses in which a connection's tokens are kept fresh and its jobs run. While the
    # app's credentials are broken, tokens Microsoft already issued stay good until they expire.
    LIVE_STATUSES = (Status.ACTIVE, Status.APP_CREDENTIALS_BROKEN)
    # How each status looks wherever it is shown (core.formatting.TONE_COLOURS).
    STATUS_TONES = {
        Status.ACTIVE: "ok",
        Status.RECONNECT_NEEDED: "bad",
        Status.APP_CREDENTIALS_BROKEN: "bad",
    }

    app = models.ForeignKey(EntraApp, on_delete=models.CASCADE, related_name="connections")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="microsoft_connections",
    )
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.DELEGATED)
    # The customer's own end user, for a connection made through a connect session (the API):
    # how the customer's backend finds it again.
    end_user_id = models.CharField(max_length=255, blank=True, db_index=True)
    end_user_email = models.CharField(max_length=254, blank=True)
    end_user_name = models.CharField(max_length=256, blank=True)
    ms_tenant_id = models.CharField("Microsoft tenant id (tid)", max_length=36)
    ms_object_id = models.CharField(
        "Microsoft object id (oid)", max_length=36, blank=True, help_text="Empty for app-only."
    )
    display_name = models.CharField(max_length=256, blank=True)
    user_principal_name = models.CharField("UPN", max_length=256, blank=True)
    email = models.CharField(max_length=256, blank=True)
    granted_scopes = models.TextField(blank=True)
    access_token = EncryptedTextField(null=True, blank=True)
    refresh_token = EncryptedTextField(null=True, blank=True)
    access_token_expires_at = models.DateTimeField(null=True, blank=True)
    # The access token's `expires_in`: a token shorter-lived than the refresh margin is
    # refreshed at half its life, not at every call (connections.tokens.refresh_due_at).
    access_token_lifetime = models.PositiveIntegerField(
        "access-token lifetime (s)", null=True, blank=True
    )
    # Microsoft's optional `refresh_in`: refresh proactively after this moment.
    refresh_after = models.DateTimeField(null=True, blank=True)
    refresh_token_updated_at = models.DateTimeField(null=True, blank=True)
    # When the tokens were last written. A kept token answer carries the value it replaces and
    # applies only over it, so an older answer never overwrites tokens written after it.
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    # When a refresh last asked the token endpoint, whatever the answer: paced callers send no
    # other request within connections.tokens.MIN_REFRESH_INTERVAL.
    refresh_requested_at = models.DateTimeField(null=True, blank=True)
    failure_streak = models.PositiveIntegerField(default=0)
    # After a transient failure, no refresh is dispatched before this (exponential backoff).
    next_refresh_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(
        max_length=24, choices=Status.choices, default=Status.ACTIVE, db_index=True
    )
    status_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["app", "ms_tenant_id", "ms_object_id"], name="connection_unique_account"
            )
        ]
        indexes = [
            # The beat dispatch: active connections by access-token expiry and by the age of
            # their refresh token (keep-alive).
            models.Index(fields=["status", "access_token_expires_at"], name="conn_due_expiry"),
            models.Index(fields=["status", "refresh_token_updated_at"], name="conn_due_keepalive"),
        ]

    def __str__(self) -> str:
        who = self.user_principal_name or self.display_name or self.ms_object_id
        if self.kind == self.Kind.APPLICATION:
            who = f"app-only in {self.ms_tenant_id}"
        return f"{who} via {self.app}"

    @property
    def tenant(self) -> Tenant:
        return self.app.tenant

    @property
    def status_tone(self) -> str:
        return self.STATUS_TONES.get(self.status, "none")


class AuthorizationAttempt(models.Model):
    """One trip to Microsoft: the connect flow, admin consent or a sign-in. Single use."""

    class Kind(models.TextChoices):
        CONNECT = "connect", "Connect an account"
        ADMIN_CONSENT = "admin_consent", "Admin consent"
        SIGN_IN = "sign_in", "Sign in with Microsoft"

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        CANCELLED = "cancelled", "Cancelled by the user"
        FAILED = "failed", "Failed"

    LIFETIME_SECONDS = 600

    state = models.CharField(max_length=64, unique=True)
    code_verifier = EncryptedTextField(blank=True)
    nonce = models.CharField(max_length=64, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CONNECT)
    # Nobody for a connect session's attempt: the end user has no Graphport login, and the
    # browser that opened the session is the one that must come back (connections.connect).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="authorization_attempts",
    )
    connect_session = models.ForeignKey(
        "connections.ConnectSession",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="attempts",
    )
    # None for a sign-in through the platform's own app (settings.SIGNIN_CLIENT_ID).
    app = models.ForeignKey(
        EntraApp,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="authorization_attempts",
    )
    # A sign-in: the invitation it accepts, and whether it also connects the account.
    invitation = models.ForeignKey(
        "connections.Invitation",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="attempts",
    )
    connect_too = models.BooleanField(default=False)
    return_path = models.CharField(max_length=500, default="/")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(
        max_length=10, choices=Outcome.choices, default=Outcome.PENDING, db_index=True
    )
    error = models.CharField(max_length=100, blank=True)
    error_code = models.CharField("AADSTS code", max_length=20, blank=True)
    error_description = models.TextField(blank=True)
    trace_id = models.CharField(max_length=64, blank=True)
    connection = models.ForeignKey(
        Connection, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.user} ({self.get_outcome_display()})"
