"""What a tenant's own backend uses: API keys, and connect sessions for its end users."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from connections.models.apps import EntraApp
from connections.models.connections import Connection
from connections.models.tenants import Tenant


class ApiKey(models.Model):
    """A key for the customer API. Only a hash is kept: the key itself is shown once, when it is
    made (connections.apikeys)."""

    class Permission(models.TextChoices):
        READ = "read", "read (lists, records, proxy GET)"
        WRITE = "write", "write (also actions and proxy writes)"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, help_text="What uses it, e.g. 'billing backend'.")
    permission = models.CharField(max_length=5, choices=Permission.choices, default="read")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Empty: until revoked. Requests after it answer 401."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def can_write(self) -> bool:
        return self.permission == self.Permission.WRITE

    def usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class ConnectSession(models.Model):
    """A single-use link a customer's backend makes for one of its end users: opening it goes
    straight to Microsoft's sign-in, and the browser comes back to `return_url` with the
    outcome. The end user needs no Graphport account."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending"
        CONNECTED = "connected", "Connected"
        FAILED = "failed", "Failed"

    LIFETIME_SECONDS = 900

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="connect_sessions")
    app = models.ForeignKey(EntraApp, on_delete=models.CASCADE, related_name="connect_sessions")
    api_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, related_name="+")
    token_hash = models.CharField(max_length=64, unique=True)
    end_user_id = models.CharField(max_length=255)
    end_user_email = models.CharField(max_length=254, blank=True)
    end_user_name = models.CharField(max_length=256, blank=True)
    return_url = models.URLField(max_length=2000)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    opened_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.PENDING)
    error = models.CharField(max_length=100, blank=True)
    connection = models.ForeignKey(
        Connection, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"connect session for {self.end_user_id} ({self.get_outcome_display()})"
