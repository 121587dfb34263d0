from __future__ import annotations

from datetime import date

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property

from connections import scopes as scope_rules
from connections.clouds import (
    MULTI_TENANT_AUTHORITIES,
    NATIONAL_CLOUDS,
    Cloud,
    Hosts,
    is_domain,
    is_guid,
    is_specific_tenant,
)
from portal.encryption import EncryptedTextField

SECRET_WARNING_DAYS = 30
EXPIRY_WARNING_DAYS = (30, 7, 1)


class Tenant(models.Model):
    """A customer organisation of the portal."""

    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


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


def validate_guid(value: str) -> None:
    if not is_guid(value):
        raise ValidationError(
            f"{value!r} is not a GUID such as 00000000-0000-0000-0000-000000000000 "
            "(copy it from the app's Overview page in the Microsoft Entra admin center)."
        )


def validate_authority(value: str) -> None:
    if value in MULTI_TENANT_AUTHORITIES or is_guid(value) or is_domain(value):
        return
    raise ValidationError(
        f"{value!r} is not an authority: use common, organizations, consumers, the tenant's "
        "Directory (tenant) ID, or one of its verified domains such as contoso.onmicrosoft.com."
    )


class EntraApp(models.Model):
    """One Microsoft Entra app registration of a tenant."""

    class GraphVersion(models.TextChoices):
        V1 = "v1.0", "v1.0 (production)"
        BETA = "beta", "beta (previews that may change)"

    class Prompt(models.TextChoices):
        NONE_SET = "", "(none: Microsoft decides)"
        SELECT_ACCOUNT = "select_account", "select_account"
        LOGIN = "login", "login"
        CONSENT = "consent", "consent"
        NONE = "none", "none (no interaction; fails if any is needed)"

    class ResponseMode(models.TextChoices):
        FORM_POST = "form_post", "form_post (recommended)"
        QUERY = "query", "query"

    class CredentialStatus(models.TextChoices):
        UNKNOWN = "unknown", "Not verified"
        OK = "ok", "Working"
        BROKEN = "broken", "Broken"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="apps")
    name = models.CharField(max_length=200)
    client_id = models.CharField(
        "Application (client) ID", max_length=36, validators=[validate_guid]
    )
    directory_tenant_id = models.CharField(
        "Directory (tenant) ID",
        max_length=36,
        blank=True,
        validators=[validate_guid],
        help_text="From the app's Overview page. Needed to verify credentials when the "
        "authority is common, organizations or consumers.",
    )
    cloud = models.CharField(max_length=10, choices=Cloud.choices, default=Cloud.GLOBAL)
    login_base_url = models.URLField(
        "Custom login URL", blank=True, help_text="Only for the custom cloud."
    )
    graph_base_url = models.URLField(
        "Custom Graph URL", blank=True, help_text="Only for the custom cloud."
    )
    authority = models.CharField(
        max_length=253,
        default="organizations",
        validators=[validate_authority],
        help_text="common, organizations, consumers, a tenant GUID or a verified domain: "
        "match the supported account types chosen in the Azure portal.",
    )
    delegated_scopes = models.TextField(
        blank=True,
        default="User.Read",
        help_text="Microsoft Graph permissions, separated by spaces, e.g. User.Read Mail.Read. "
        "openid, profile, email and offline_access are always requested.",
    )
    use_application_permissions = models.BooleanField(
        "Application permissions",
        default=False,
        help_text="Also sync as the app itself (directory users and groups) after admin "
        "consent. Needs a tenant GUID or domain as authority.",
    )
    graph_version = models.CharField(
        max_length=4, choices=GraphVersion.choices, default=GraphVersion.V1
    )
    default_prompt = models.CharField(
        max_length=20, choices=Prompt.choices, default=Prompt.SELECT_ACCOUNT, blank=True
    )
    response_mode = models.CharField(
        max_length=10, choices=ResponseMode.choices, default=ResponseMode.FORM_POST
    )
    is_active = models.BooleanField("Active", default=True)
    credentials_status = models.CharField(
        max_length=10, choices=CredentialStatus.choices, default=CredentialStatus.UNKNOWN
    )
    credentials_checked_at = models.DateTimeField(null=True, blank=True)
    credentials_detail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Entra app registration"
        ordering = ["tenant", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "client_id"], name="entraapp_unique_client_per_tenant"
            )
        ]

    def __str__(self) -> str:
        return self.name

    # --- validation ---------------------------------------------------------------------------

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        self.client_id = self.client_id.strip().lower()
        self.directory_tenant_id = self.directory_tenant_id.strip().lower()
        self.authority = self.authority.strip()
        if is_guid(self.authority) or is_domain(self.authority):
            self.authority = self.authority.lower()
        if self.cloud == Cloud.CUSTOM:
            for field in ("login_base_url", "graph_base_url"):
                url = getattr(self, field).strip().rstrip("/")
                setattr(self, field, url)
                if not url:
                    errors.setdefault(field, []).append("Required for the custom cloud.")
                elif url.startswith("http://") and not settings.MICROSOFT_ALLOW_HTTP:
                    errors.setdefault(field, []).append(
                        "Must be https://. Plain http:// is only allowed for a local emulator, "
                        "when MICROSOFT_ALLOW_HTTP is set."
                    )
        elif self.login_base_url or self.graph_base_url:
            message = "Only used with the custom cloud: clear it or choose Custom."
            for field in ("login_base_url", "graph_base_url"):
                if getattr(self, field):
                    errors.setdefault(field, []).append(message)
        scopes = scope_rules.parse(self.delegated_scopes)
        try:
            graph_host = self.hosts.graph if not errors else None
            scope_rules.validate_delegated(scopes, graph_host=graph_host)
        except ValidationError as exc:
            errors.setdefault("delegated_scopes", []).extend(exc.messages)
        else:
            self.delegated_scopes = " ".join(scopes)
        if self.use_application_permissions and not is_specific_tenant(self.authority):
            errors.setdefault("use_application_permissions", []).append(
                f"Application permissions need the tenant's own authority (its GUID or domain), "
                f"not {self.authority!r}: Microsoft refuses client credentials there "
                "(AADSTS9001023)."
            )
        if errors:
            raise ValidationError(errors)

    # --- derived URLs ----------------------------------------------------------------------------

    @property
    def hosts(self) -> Hosts:
        if self.cloud == Cloud.CUSTOM:
            return Hosts(self.login_base_url.rstrip("/"), self.graph_base_url.rstrip("/"))
        return NATIONAL_CLOUDS[Cloud(self.cloud)]

    @property
    def scope_list(self) -> list[str]:
        return scope_rules.parse(self.delegated_scopes)

    @property
    def requested_scopes(self) -> list[str]:
        return scope_rules.requested(self.scope_list)

    @property
    def app_only_scope(self) -> str:
        return f"{self.hosts.graph}/.default"

    @property
    def credential_tenant(self) -> str | None:
        """Where a client-credentials request goes: the authority if it names one tenant, else
        the app's home directory."""
        if is_specific_tenant(self.authority):
            return self.authority
        return self.directory_tenant_id or None

    @property
    def redirect_uri(self) -> str:
        return settings.PORTAL_BASE_URL + reverse("connections:callback")

    def login_url(self, tenant: str, path: str) -> str:
        return f"{self.hosts.login}/{tenant}/{path}"

    @property
    def authorize_url(self) -> str:
        return self.login_url(self.authority, "oauth2/v2.0/authorize")

    @property
    def token_url(self) -> str:
        return self.login_url(self.authority, "oauth2/v2.0/token")

    def token_url_for(self, tenant: str) -> str:
        return self.login_url(tenant, "oauth2/v2.0/token")

    @property
    def metadata_url(self) -> str:
        return self.login_url(self.authority, "v2.0/.well-known/openid-configuration")

    @property
    def jwks_url(self) -> str:
        return self.login_url(self.authority, "discovery/v2.0/keys")

    @property
    def admin_consent_url(self) -> str:
        # Admin consent takes a GUID, a domain or `organizations`, never `common` (reference §1).
        tenant = self.authority if is_specific_tenant(self.authority) else "organizations"
        return self.login_url(tenant, "v2.0/adminconsent")

    @property
    def graph_url(self) -> str:
        return f"{self.hosts.graph}/{self.graph_version}"

    # --- secrets ---------------------------------------------------------------------------------

    @cached_property
    def usable_secrets(self) -> list[ClientSecret]:
        """Unexpired secrets, the one added last first: a secret added before the old one
        expires takes over at once, and the old one stays as a fallback until it expires."""
        today = timezone.localdate()
        return sorted(
            (s for s in self.secrets.all() if s.expires_on >= today),
            key=lambda s: (s.created_at, s.pk),
            reverse=True,
        )


class ClientSecret(models.Model):
    app = models.ForeignKey(EntraApp, on_delete=models.CASCADE, related_name="secrets")
    description = models.CharField(max_length=100, blank=True)
    value = EncryptedTextField()
    hint = models.CharField(
        max_length=3, blank=True, help_text="The first characters, as the Azure portal shows."
    )
    expires_on = models.DateField(help_text="As shown in the Azure portal's Expires column.")
    created_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)
    verification_ok = models.BooleanField(null=True)
    verification_detail = models.TextField(blank=True)
    # The smallest of EXPIRY_WARNING_DAYS already warned about, so each warning goes out once.
    warned_days = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        label = self.description or "client secret"
        return f"{label} ({self.hint}…, expires {self.expires_on:%Y-%m-%d})"

    def days_left(self, today: date | None = None) -> int:
        return (self.expires_on - (today or timezone.localdate())).days

    @property
    def expiry_state(self) -> str:
        days = self.days_left()
        if days < 0:
            return "expired"
        if days < SECRET_WARNING_DAYS:
            return "expiring"
        return "fine"


class AppCertificate(models.Model):
    """A certificate credential: Microsoft recommends it over client secrets. The public part is
    uploaded in the Azure portal; Graphport keeps the private key (encrypted) and signs a
    `client_assertion` with it."""

    app = models.ForeignKey(EntraApp, on_delete=models.CASCADE, related_name="certificates")
    description = models.CharField(max_length=100, blank=True)
    certificate_pem = models.TextField(help_text="The public certificate (PEM).")
    private_key = EncryptedTextField(help_text="The private key (PEM, unencrypted).")
    thumbprint_sha256 = models.CharField("x5t#S256", max_length=64, editable=False)
    thumbprint_sha1 = models.CharField(
        "Thumbprint (as the Azure portal shows it)", max_length=40, editable=False
    )
    expires_on = models.DateField(editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)
    verification_ok = models.BooleanField(null=True)
    verification_detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.description or 'certificate'} ({self.thumbprint_sha1[:8]}…)"


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

    app = models.ForeignKey(EntraApp, on_delete=models.CASCADE, related_name="connections")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="microsoft_connections",
    )
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.DELEGATED)
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
    # Microsoft's optional `refresh_in`: refresh proactively after this moment.
    refresh_after = models.DateTimeField(null=True, blank=True)
    refresh_token_updated_at = models.DateTimeField(null=True, blank=True)
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
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


class AuthorizationAttempt(models.Model):
    """One trip to Microsoft: the connect flow or admin consent. Single use."""

    class Kind(models.TextChoices):
        CONNECT = "connect", "Connect an account"
        ADMIN_CONSENT = "admin_consent", "Admin consent"

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
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="authorization_attempts"
    )
    app = models.ForeignKey(
        EntraApp, on_delete=models.CASCADE, related_name="authorization_attempts"
    )
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


class Member(User):
    """A portal login seen from a tenant: the admin's way for tenant administrators to manage
    the people of their own organisation without touching Django's user admin."""

    class Meta:
        proxy = True
        verbose_name = "member"
