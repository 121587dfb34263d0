"""Customer organisations of the portal and the people in them."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import models

from connections.clouds import is_guid


def new_signin_key() -> str:
    return secrets.token_urlsafe(12)


class Tenant(models.Model):
    """A customer organisation of the portal."""

    class JoinPolicy(models.TextChoices):
        INVITED = "invited", "Only people invited"
        DIRECTORY = "directory", "Anyone from the verified directory, as a member"

    name = models.CharField(max_length=200, unique=True)
    # The organisation's own Microsoft Entra directory, proven by an admin consent granted from
    # it (or set by an operator): who may join without an invitation (connections.signin).
    directory_id = models.CharField(
        "Verified directory (tenant) ID",
        max_length=36,
        null=True,
        blank=True,
        unique=True,
        help_text="Your Microsoft Entra Directory (tenant) ID. Graphport trusts it once an admin "
        "consent from that directory has been granted to one of your apps.",
    )
    join_policy = models.CharField(
        "Who may join",
        max_length=10,
        choices=JoinPolicy.choices,
        default=JoinPolicy.INVITED,
        help_text="On their first Sign in with Microsoft. People of other directories always "
        "need an invitation.",
    )
    invitations_any_account = models.BooleanField(
        "Invitations accept any Microsoft account",
        default=False,
        help_text="Off: an invitation sent to an address is accepted only by the Microsoft "
        "account with that e-mail or user name.",
    )
    signin_app = models.ForeignKey(
        "connections.EntraApp",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name="Sign-in app",
        help_text="Sign people in through this app of yours instead of Graphport's. With sync "
        "permissions, a member signs in and connects with one consent.",
    )
    # Part of the organisation's own sign-in link (/accounts/microsoft/<key>/): unguessable, so
    # the link tells nobody which organisations use Graphport.
    signin_key = models.CharField(
        max_length=32, unique=True, default=new_signin_key, editable=False
    )
    require_admin_2fa = models.BooleanField(
        "Two-factor authentication for administrators",
        default=False,
        help_text="Tenant administrators must use a second factor (an authenticator app or a "
        "passkey), or a Microsoft sign-in that Microsoft reports as multi-factor.",
    )
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

    def clean(self) -> None:
        value = (self.directory_id or "").strip().lower()
        if value and not is_guid(value):
            raise ValidationError(
                {"directory_id": f"{value!r} is not a Directory (tenant) ID (a GUID)."}
            )
        self.directory_id = value or None

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
