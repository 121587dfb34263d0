"""How people get into the portal: their Microsoft sign-in identities and their invitations."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from connections.models.tenants import Membership, Tenant


class MicrosoftIdentity(models.Model):
    """A Microsoft work account that signs in as a portal login, keyed by (`tid`, `oid`): never by
    e-mail or user name, which change and which another directory can claim for its own users
    (docs/microsoft.md, "ID tokens")."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="microsoft_identities"
    )
    ms_tenant_id = models.CharField("Microsoft tenant id (tid)", max_length=36)
    ms_object_id = models.CharField("Microsoft object id (oid)", max_length=36)
    # As the last sign-in said, for people to recognise the account; never used to find it.
    username = models.CharField("user name at the last sign-in", max_length=256, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_sign_in_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Microsoft sign-in"
        constraints = [
            models.UniqueConstraint(
                fields=["ms_tenant_id", "ms_object_id"], name="microsoft_identity_unique_account"
            )
        ]

    def __str__(self) -> str:
        return f"{self.username or self.ms_object_id} ({self.ms_tenant_id})"


class Invitation(models.Model):
    """An invitation to join a tenant, sent by e-mail as a signed, single-use link."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACCEPTED = "accepted", "Accepted"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField("e-mail address")
    role = models.CharField(
        max_length=10, choices=Membership.Role.choices, default=Membership.Role.MEMBER
    )
    # A hash of the link's secret part: the link itself is only ever in the e-mail. Resending
    # makes a new secret, so an older link stops working.
    secret_hash = models.CharField(max_length=64, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    times_sent = models.PositiveSmallIntegerField(default=0)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "email"], name="invitation_tenant_email")]

    def __str__(self) -> str:
        return f"{self.email} to {self.tenant} ({self.get_role_display()})"

    @property
    def status(self) -> str:
        if self.accepted_at:
            return self.Status.ACCEPTED
        if self.revoked_at:
            return self.Status.REVOKED
        if self.expires_at <= timezone.now():
            return self.Status.EXPIRED
        return self.Status.PENDING

    def get_status_display(self) -> str:
        return self.Status(self.status).label
