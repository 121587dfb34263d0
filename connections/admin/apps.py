from __future__ import annotations

from django.contrib import admin, messages
from django.db import models
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.debug import sensitive_post_parameters

from connections import audit, credentials
from connections.admin.badges import secret_badge, verification_badge
from connections.clouds import Cloud
from connections.forms import (
    CUSTOM_CLOUD_OPERATORS_ONLY,
    AppCertificateForm,
    ClientSecretForm,
    EntraAppForm,
)
from connections.models import (
    AppCertificate,
    AuditEvent,
    ClientSecret,
    EntraApp,
)
from connections.models.apps import TENANT_LOCKED
from connections.tenancy import TenantScopedAdmin, TenantScopedInline, admin_tenant
from core.formatting import badge

#: how a credential's expiry_state looks
EXPIRY_TONES = {"expired": "bad", "expiring": "warn", "fine": "ok"}


class CredentialInline(TenantScopedInline, admin.TabularInline):
    """What secrets and certificates show alike: their last verification."""

    extra = 0

    @admin.display(description="Last check")
    def verification(self, obj: ClientSecret | AppCertificate) -> str:
        return verification_badge(obj)


class ClientSecretInline(CredentialInline):
    model = ClientSecret
    form = ClientSecretForm
    fields = ["description", "new_value", "stored", "expires_on", "verification"]
    readonly_fields = ["stored", "verification"]
    verbose_name = "client secret"

    @admin.display(description="Stored")
    def stored(self, obj: ClientSecret) -> str:
        if not obj.pk:
            return "—"
        return format_html("{}&hellip; {}", obj.hint, secret_badge(obj))


class AppCertificateInline(CredentialInline):
    model = AppCertificate
    form = AppCertificateForm
    fields = ["description", "certificate_pem", "new_private_key", "stored", "verification"]
    readonly_fields = ["stored", "verification"]
    verbose_name = "certificate"

    @admin.display(description="Stored")
    def stored(self, obj: AppCertificate) -> str:
        if not obj.pk:
            return "—"
        tone = EXPIRY_TONES[obj.expiry_state]
        return format_html(
            "thumbprint {} {}", obj.thumbprint_sha1, badge(f"expires {obj.expires_on}", tone)
        )


@admin.register(EntraApp)
class EntraAppAdmin(TenantScopedAdmin):
    change_form_template = "admin/connections/entraapp/change_form.html"
    form = EntraAppForm
    list_display = [
        "name",
        "tenant",
        "client_id",
        "cloud",
        "authority",
        "credentials",
        "secret_expiry",
        "is_active",
    ]
    list_filter = ["credentials_status", "cloud", "is_active", "use_application_permissions"]
    list_select_related = ["tenant"]
    search_fields = ["name", "client_id", "directory_tenant_id", "tenant__name"]
    actions = ["verify_credentials"]
    inlines = [ClientSecretInline, AppCertificateInline]
    readonly_fields = [
        "redirect_uri_field",
        "requested_scopes_field",
        "endpoints",
        "credentials_status",
        "credentials_checked_at",
        "credentials_detail",
    ]
    fieldsets = [
        (None, {"fields": ["tenant", "name", "is_active"]}),
        (
            "Azure app registration",
            {
                "fields": [
                    "redirect_uri_field",
                    "client_id",
                    "directory_tenant_id",
                    "authority",
                    "cloud",
                    "login_base_url",
                    "graph_base_url",
                ]
            },
        ),
        (
            "Permissions",
            {
                "fields": [
                    "delegated_scopes",
                    "requested_scopes_field",
                    "use_application_permissions",
                    "graph_version",
                    "default_prompt",
                    "response_mode",
                ]
            },
        ),
        (
            "Credentials",
            {"fields": ["credentials_status", "credentials_checked_at", "credentials_detail"]},
        ),
        ("Microsoft endpoints", {"fields": ["endpoints"], "classes": ["collapse"]}),
    ]

    @method_decorator(sensitive_post_parameters())  # secret values and private keys
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return super().changeform_view(request, object_id, form_url, extra_context)

    # --- who may change what ------------------------------------------------------------------

    def locked_fields(self, request, obj: EntraApp | None) -> dict[str, str]:
        """Fields shown read-only to this user on this app, each with the reason."""
        locked = {}
        if obj is not None and obj.pk and obj.connections.exists():
            locked["tenant"] = TENANT_LOCKED
        if not request.user.is_superuser:
            locked["login_base_url"] = locked["graph_base_url"] = CUSTOM_CLOUD_OPERATORS_ONLY
        return locked

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        return fields + [name for name in self.locked_fields(request, obj) if name not in fields]

    def get_fieldsets(self, request, obj=None):
        locked = self.locked_fields(request, obj)
        notes = {
            None: TENANT_LOCKED if "tenant" in locked else None,
            "Azure app registration": (
                CUSTOM_CLOUD_OPERATORS_ONLY if "login_base_url" in locked else None
            ),
        }
        return [
            (title, {**options, "description": notes[title]} if notes.get(title) else options)
            for title, options in super().get_fieldsets(request, obj)
        ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.operator = request.user.is_superuser
        form.locked = self.locked_fields(request, obj)
        cloud = form.base_fields.get("cloud")
        if cloud is not None and not form.operator and (obj is None or obj.cloud != Cloud.CUSTOM):
            # Not offered; chosen anyway, EntraAppForm refuses it with the reason.
            cloud.widget.choices = [c for c in cloud.choices if c[0] != Cloud.CUSTOM]
        return form

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if isinstance(db_field, models.URLField):
            kwargs["assume_scheme"] = "https"  # a URL typed without a scheme means https
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_list_filter(self, request):
        filters = list(super().get_list_filter(request))
        return ["tenant", *filters] if request.user.is_superuser else filters

    def get_queryset(self, request):
        # The expiry badges need the secrets' dates, never their values.
        secrets = models.Prefetch("secrets", queryset=ClientSecret.objects.defer("value"))
        return super().get_queryset(request).prefetch_related(secrets)

    @admin.display(description="Redirect URI")
    def redirect_uri_field(self, obj: EntraApp | None) -> str:
        uri = (obj or EntraApp()).redirect_uri
        return format_html(
            '<code id="gp-redirect-uri">{}</code> <button type="button" class="button" '
            "onclick=\"navigator.clipboard.writeText(document.getElementById('gp-redirect-uri')"
            ".textContent);this.textContent='Copied'\">Copy</button>"
            '<div class="help">Paste it in the Azure portal under Authentication → Add a '
            "platform → Web → Redirect URIs.</div>",
            uri,
        )

    @admin.display(description="Requested scopes")
    def requested_scopes_field(self, obj: EntraApp | None) -> str:
        app = obj or EntraApp()
        always = format_html_join(" ", "<code>{}</code>", ((s,) for s in app.requested_scopes[:4]))
        own = format_html_join(" ", "<code>{}</code>", ((s,) for s in app.requested_scopes[4:]))
        return format_html("{} (always) {}", always, own)

    @admin.display(description="Endpoints")
    def endpoints(self, obj: EntraApp | None) -> str:
        if obj is None or not obj.pk:
            return "Shown once the app is saved."
        rows = [
            ("Authorize", obj.authorize_url),
            ("Token", obj.token_url),
            ("OpenID metadata", obj.metadata_url),
            ("Signing keys (JWKS)", obj.jwks_url),
            ("Admin consent", obj.admin_consent_url),
            ("Graph", obj.graph_url),
        ]
        return format_html(
            "<table>{}</table>",
            format_html_join("", "<tr><th>{}</th><td><code>{}</code></td></tr>", rows),
        )

    @admin.display(description="Credentials", ordering="credentials_status")
    def credentials(self, obj: EntraApp) -> str:
        tone = {"ok": "ok", "broken": "bad"}.get(obj.credentials_status, "none")
        return badge(obj.get_credentials_status_display(), tone)

    @admin.display(description="Secret expiry")
    def secret_expiry(self, obj: EntraApp) -> str:
        secrets = obj.usable_secrets
        if not secrets:
            return badge("no valid secret", "bad")
        return secret_badge(max(secrets, key=lambda s: s.expires_on))

    # --- verification --------------------------------------------------------------------------

    @admin.action(description="Verify credentials (client-credentials token request)")
    def verify_credentials(self, request, queryset):
        for app in queryset:
            self._report(request, app, credentials.verify(app, actor=request.user))

    def _report(self, request, app: EntraApp, result: credentials.Verification) -> None:
        level = messages.SUCCESS if result.ok else messages.ERROR
        self.message_user(request, f"{app.name}: {result.message}", level)

    def get_urls(self):
        verify = self.admin_site.admin_view(self.verify_view)
        return [
            path("<path:object_id>/verify/", verify, name="connections_entraapp_verify"),
            *super().get_urls(),
        ]

    def verify_view(self, request, object_id):
        if request.method != "POST":
            return redirect(reverse("admin:connections_entraapp_change", args=[object_id]))
        app = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_change_permission(request, app):
            return redirect(reverse("admin:index"))
        self._report(request, app, credentials.verify(app, actor=request.user))
        return redirect(reverse("admin:connections_entraapp_change", args=[app.pk]))

    # --- audit ---------------------------------------------------------------------------------

    def save_model(self, request, obj, form, change):
        if not request.user.is_superuser:
            obj.tenant = admin_tenant(request.user)
        super().save_model(request, obj, form, change)
        if change:
            if form.changed_data:
                audit.record(
                    AuditEvent.Kind.APP_CHANGED,
                    f"Changed {', '.join(form.changed_data)}.",
                    app=obj,
                    actor=request.user,
                    fields=form.changed_data,
                )
        else:
            audit.record(
                AuditEvent.Kind.APP_CREATED, f"Registered {obj.name}.", app=obj, actor=request.user
            )

    def save_formset(self, request, form, formset, change):
        instances = formset.save()
        for secret_form in formset.forms:
            secret = secret_form.instance
            if isinstance(secret, ClientSecret) and secret_form.cleaned_data.get("new_value"):
                audit.record(
                    AuditEvent.Kind.SECRET_ADDED,
                    f"Added a client secret ({secret.hint}…) expiring on "
                    f"{secret.expires_on:%Y-%m-%d}.",
                    app=secret.app,
                    actor=request.user,
                )
        return instances
