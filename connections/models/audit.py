"""The audit trail."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from connections.models.apps import EntraApp
from connections.models.connections import Connection
from connections.models.tenants import Tenant


class AuditEvent(models.Model):
    """An audit line for anything that changes an app or a connection."""

    class Kind(models.TextChoices):
        APP_CREATED = "app_created", "App registered"
        APP_CHANGED = "app_changed", "App changed"
        SECRET_ADDED = "secret_added", "Secret added"
        SECRET_EXPIRING = "secret_expiring", "Secret expiring"
        CREDENTIALS_VERIFIED = "credentials_verified", "Credentials verified"
        CREDENTIALS_FAILED = "credentials_failed", "Credentials check failed"
        CONSENT_GRANTED = "consent_granted", "Admin consent granted"
        CONSENT_FAILED = "consent_failed", "Admin consent failed"
        CONNECTED = "connected", "Connected"
        CONNECT_FAILED = "connect_failed", "Connection attempt failed"
        REFRESHED = "refreshed", "Token refreshed"
        REFRESH_FAILED = "refresh_failed", "Token refresh failed"
        RECONNECT_NEEDED = "reconnect_needed", "Reconnect needed"
        DISABLED = "disabled", "Disabled"
        DISCONNECTED = "disconnected", "Disconnected"
        APP_PAUSED = "app_paused", "Refreshes paused: app credentials broken"
        APP_RESUMED = "app_resumed", "Refreshes resumed"
        REFRESH_ALERT = "refresh_alert", "Refresh failing repeatedly"
        API_KEY_CREATED = "api_key_created", "API key created"
        API_KEY_REVOKED = "api_key_revoked", "API key revoked"
        CONNECT_SESSION = "connect_session", "Connect session created"
        PROXY_WRITE = "proxy_write", "Graph write through the proxy"
        API_ACTION = "api_action", "Action through the API"
        ORG_SYNC_CHANGED = "org_sync_changed", "Organisation-wide sync changed"
        ORG_SYNC_PAUSED = "org_sync_paused", "Organisation-wide sync paused"
        ORG_SYNC_RESUMED = "org_sync_resumed", "Organisation-wide sync resumed"
        SIGNED_IN = "signed_in", "Signed in with Microsoft"
        SIGN_IN_REFUSED = "sign_in_refused", "Sign-in refused"
        MEMBER_JOINED = "member_joined", "Member joined"
        INVITATION_SENT = "invitation_sent", "Invitation sent"
        INVITATION_REVOKED = "invitation_revoked", "Invitation revoked"
        INVITATION_ACCEPTED = "invitation_accepted", "Invitation accepted"
        SIGN_IN_SETTINGS = "sign_in_settings", "Sign-in settings changed"
        TWO_FACTOR = "two_factor", "Two-factor authentication changed"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="audit_events")
    app = models.ForeignKey(
        EntraApp, on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_events"
    )
    connection = models.ForeignKey(
        Connection,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="audit_events",
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="audit_tenant_recent")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.message[:80]}"

    def get_absolute_url(self) -> str:
        return reverse("admin:connections_auditevent_change", args=[self.pk])
