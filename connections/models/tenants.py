"""Customer organisations of the portal and the people in them."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.db import models


class Tenant(models.Model):
    """A customer organisation of the portal."""

    name = models.CharField(max_length=200, unique=True)
    return_origins = models.TextField(
        "Allowed return origins",
        blank=True,
        max_length=2000,
        help_text="Where a connect session may send the end user back: one origin per line, "
        "such as https://app.example.com (scheme, host and port; no path).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def return_origin_list(self) -> list[str]:
        return [
            line.strip().rstrip("/") for line in self.return_origins.splitlines() if line.strip()
        ]


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Tenant administrator"
        MEMBER = "member", "Member"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} ({self.get_role_display()} of {self.tenant})"


class Member(User):
    """A portal login seen from a tenant: the admin's way for tenant administrators to manage
    the people of their own organisation without touching Django's user admin."""

    class Meta:
        proxy = True
        verbose_name = "member"
