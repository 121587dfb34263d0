"""Entra app registrations and their credentials (client secrets, certificates)."""

from __future__ import annotations

from datetime import date

from django.conf import settings
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
from connections.models.tenants import Tenant
from core import outbound
from core.encryption import EncryptedTextField

#: Warnings go to a tenant's administrators this many days before a client secret or a
#: certificate expires (connections.expiry). The largest is also the horizon within which a
#: credential counts as expiring soon, wherever that is shown (its badge, the dashboard).
EXPIRY_WARNING_DAYS = (30, 7, 1)
SECRET_WARNING_DAYS = max(EXPIRY_WARNING_DAYS)

#: The longest secret value or PEM text accepted. Azure's client secrets are 40 characters; a
#: certificate or an RSA private key in PEM, even at 8,192 bits, is a few kilobytes.
SECRET_MAX_LENGTH = 256
PEM_MAX_LENGTH = 16_384

#: Why an app with connections keeps its tenant: its jobs, runs, records and subscriptions carry
#: the tenant they were created under, so a moved app would leave its data with the old tenant's
#: administrators.
TENANT_LOCKED = (
    "The tenant cannot change once the app has connections: their jobs, runs and records "
    "belong to this tenant. Disconnect and delete them first, or register the app again "
    "in the other tenant."
)


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
        max_length=scope_rules.MAX_SCOPES_TEXT,
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
        if self.tenant_moved():
            errors.setdefault("tenant", []).append(TENANT_LOCKED)
        if self.cloud == Cloud.CUSTOM:
            for field in ("login_base_url", "graph_base_url"):
                url = getattr(self, field).strip().rstrip("/")
                setattr(self, field, url)
                # Refused here, with the rule, and again before every request (core.outbound).
                problem = outbound.problem(url) if url else "Required for the custom cloud."
                if problem:
                    errors.setdefault(field, []).append(problem)
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

    def tenant_moved(self) -> bool:
        """Whether this unsaved change moves an app that has connections to another tenant."""
        if self.pk is None or self.tenant_id is None:
            return False
        stored = EntraApp.objects.filter(pk=self.pk).values_list("tenant_id", flat=True).first()
        return stored is not None and stored != self.tenant_id and self.connections.exists()

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
        # Admin consent takes a GUID, a domain or `organizations`, never `common`
        # (docs/microsoft.md, "Admin consent").
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


class Credential(models.Model):
    """What client secrets and certificates share: an expiry, the last verification, and the
    expiry warnings already sent."""

    created_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)
    verification_ok = models.BooleanField(null=True)
    verification_detail = models.TextField(blank=True)
    # The smallest of EXPIRY_WARNING_DAYS already warned about, so each warning goes out once.
    warned_days = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    #: what the credential is called in notices and the audit trail
    noun = "credential"

    def days_left(self, today: date | None = None) -> int:
        return (self.expires_on - (today or timezone.localdate())).days

    @property
    def expiry_state(self) -> str:
        """`expired`, `expiring` (within SECRET_WARNING_DAYS) or `fine`."""
        days = self.days_left()
        if days < 0:
            return "expired"
        if days < SECRET_WARNING_DAYS:
            return "expiring"
        return "fine"


class ClientSecret(Credential):
    app = models.ForeignKey(EntraApp, on_delete=models.CASCADE, related_name="secrets")
    description = models.CharField(max_length=100, blank=True)
    value = EncryptedTextField()
    hint = models.CharField(
        max_length=3, blank=True, help_text="The first characters, as the Azure portal shows."
    )
    expires_on = models.DateField(help_text="As shown in the Azure portal's Expires column.")

    noun = "client secret"

    def __str__(self) -> str:
        label = self.description or "client secret"
        return f"{label} ({self.hint}…, expires {self.expires_on:%Y-%m-%d})"

    @property
    def short_label(self) -> str:
        """How the Azure portal shows it: its first characters."""
        return f"{self.hint}…"


class AppCertificate(Credential):
    """A certificate credential: Microsoft recommends it over client secrets. The public part is
    uploaded in the Azure portal; Graphport keeps the private key (encrypted) and signs a
    `client_assertion` with it."""

    app = models.ForeignKey(EntraApp, on_delete=models.CASCADE, related_name="certificates")
    description = models.CharField(max_length=100, blank=True)
    certificate_pem = models.TextField(
        max_length=PEM_MAX_LENGTH, help_text="The public certificate (PEM)."
    )
    private_key = EncryptedTextField(help_text="The private key (PEM, unencrypted).")
    thumbprint_sha256 = models.CharField("x5t#S256", max_length=64, editable=False)
    thumbprint_sha1 = models.CharField(
        "Thumbprint (as the Azure portal shows it)", max_length=40, editable=False
    )
    expires_on = models.DateField(editable=False)

    noun = "certificate"

    def __str__(self) -> str:
        return f"{self.description or 'certificate'} ({self.thumbprint_sha1[:8]}…)"

    @property
    def short_label(self) -> str:
        """The start of its thumbprint, as the Azure portal shows it."""
        return self.thumbprint_sha1[:8]
