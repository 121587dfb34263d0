from __future__ import annotations

from django.contrib import admin, messages
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from connections import audit, credentials, tokens
from connections.forms import AppCertificateForm, ClientSecretForm
from connections.models import (
    AppCertificate,
    AuditEvent,
    AuthorizationAttempt,
    ClientSecret,
    Connection,
    EntraApp,
    Membership,
    Tenant,
)
from portal.tenancy import TenantScopedAdmin, TenantScopedInline, admin_tenant

BADGE_COLOURS = {"ok": "#1a7f37", "warn": "#9a6700", "bad": "#cf222e", "none": "#57606a"}


def badge(text: str, tone: str) -> str:
    return format_html(
        '<span class="gp-badge" style="background:{};color:#fff;border-radius:8px;'
        'padding:1px 8px;white-space:nowrap">{}</span>',
        BADGE_COLOURS[tone],
        text,
    )


def secret_badge(secret: ClientSecret) -> str:
    days = secret.days_left()
    if days < 0:
        return badge(f"expired on {secret.expires_on:%Y-%m-%d}", "bad")
    if secret.expiry_state == "expiring":
        return badge(f"expires in {days} day{'s' if days != 1 else ''}", "warn")
    return badge(f"set, expires on {secret.expires_on:%Y-%m-%d}", "ok")


def verification_badge(obj: ClientSecret | AppCertificate) -> str:
    if obj.verification_ok is None:
        return "not verified"
    works = bool(obj.verification_ok)
    return format_html(
        "{} {}",
        badge("works" if works else "fails", "ok" if works else "bad"),
        obj.verification_detail,
    )


class MembershipInline(TenantScopedInline, admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    tenant_admin_can_add = tenant_admin_can_change = tenant_admin_can_delete = False


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdmin):
    tenant_lookup = "pk"
    tenant_admin_can_add = tenant_admin_can_delete = False
    list_display = ["name", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]


class ClientSecretInline(TenantScopedInline, admin.TabularInline):
    model = ClientSecret
    form = ClientSecretForm
    extra = 0
    fields = ["description", "new_value", "stored", "expires_on", "verification"]
    readonly_fields = ["stored", "verification"]
    verbose_name = "client secret"

    @admin.display(description="Stored")
    def stored(self, obj: ClientSecret) -> str:
        if not obj.pk:
            return "—"
        return format_html("{}&hellip; {}", obj.hint, secret_badge(obj))

    @admin.display(description="Last check")
    def verification(self, obj: ClientSecret) -> str:
        if obj.verification_ok is None:
            return "not verified"
        return format_html(
            "{} {}",
            badge(
                "works" if obj.verification_ok else "fails", "ok" if obj.verification_ok else "bad"
            ),
            obj.verification_detail,
        )


class AppCertificateInline(TenantScopedInline, admin.TabularInline):
    model = AppCertificate
    form = AppCertificateForm
    extra = 0
    fields = ["description", "certificate_pem", "new_private_key", "stored", "verification"]
    readonly_fields = ["stored", "verification"]
    verbose_name = "certificate"

    @admin.display(description="Stored")
    def stored(self, obj: AppCertificate) -> str:
        if not obj.pk:
            return "—"
        days = (obj.expires_on - timezone.localdate()).days
        tone = "bad" if days < 0 else "warn" if days < 30 else "ok"
        return format_html(
            "thumbprint {} {}", obj.thumbprint_sha1, badge(f"expires {obj.expires_on}", tone)
        )

    @admin.display(description="Last check")
    def verification(self, obj: AppCertificate) -> str:
        return verification_badge(obj)


@admin.register(EntraApp)
class EntraAppAdmin(TenantScopedAdmin):
    change_form_template = "admin/connections/entraapp/change_form.html"
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

    def get_list_filter(self, request):
        filters = list(super().get_list_filter(request))
        return ["tenant", *filters] if request.user.is_superuser else filters

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("secrets")

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


class ConnectionEventInline(TenantScopedInline, admin.TabularInline):
    model = AuditEvent
    fk_name = "connection"
    extra = 0
    max_num = 0
    fields = ["created_at", "kind", "message", "actor"]
    readonly_fields = fields
    ordering = ["-created_at"]
    verbose_name_plural = "event history"
    tenant_admin_can_add = tenant_admin_can_change = tenant_admin_can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Connection)
class ConnectionAdmin(TenantScopedAdmin):
    tenant_lookup = "app__tenant"
    tenant_admin_can_add = False
    list_display = [
        "account",
        "app",
        "kind",
        "status_badge",
        "access_token_expires_at",
        "last_refreshed_at",
        "refresh_token_age",
        "failure_streak",
    ]
    list_filter = ["status", "kind", "app__credentials_status"]
    list_select_related = ["app", "app__tenant", "user"]
    search_fields = [
        "user_principal_name",
        "display_name",
        "email",
        "ms_object_id",
        "ms_tenant_id",
        "user__username",
    ]
    actions = ["refresh_now", "disable"]
    inlines = [ConnectionEventInline]
    show_full_result_count = False
    fieldsets = [
        (None, {"fields": ["app", "user", "kind", "status", "status_reason"]}),
        (
            "Microsoft account",
            {
                "fields": [
                    "display_name",
                    "user_principal_name",
                    "email",
                    "ms_tenant_id",
                    "ms_object_id",
                    "granted_scopes",
                ]
            },
        ),
        (
            "Token health",
            {
                "fields": [
                    "access_token_expires_at",
                    "refresh_after",
                    "last_refreshed_at",
                    "refresh_token_updated_at",
                    "refresh_token_age",
                    "failure_streak",
                    "next_refresh_at",
                ]
            },
        ),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]
    readonly_fields = [
        "app",
        "user",
        "kind",
        "status",
        "status_reason",
        "display_name",
        "user_principal_name",
        "email",
        "ms_tenant_id",
        "ms_object_id",
        "granted_scopes",
        "access_token_expires_at",
        "refresh_after",
        "last_refreshed_at",
        "refresh_token_updated_at",
        "refresh_token_age",
        "failure_streak",
        "next_refresh_at",
        "created_at",
        "updated_at",
    ]

    def has_add_permission(self, request, *args) -> bool:
        return False  # connections are made by the connect and admin-consent flows

    @admin.display(description="Account", ordering="user_principal_name")
    def account(self, obj: Connection) -> str:
        return str(obj.user_principal_name or obj.display_name or f"app-only ({obj.ms_tenant_id})")

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Connection) -> str:
        tone = {
            Connection.Status.ACTIVE: "ok",
            Connection.Status.RECONNECT_NEEDED: "bad",
            Connection.Status.APP_CREDENTIALS_BROKEN: "bad",
        }.get(obj.status, "none")
        return badge(obj.get_status_display(), tone)

    @admin.display(description="Refresh token age")
    def refresh_token_age(self, obj: Connection) -> str:
        if obj.refresh_token_updated_at is None:
            return "—"
        return f"{(timezone.now() - obj.refresh_token_updated_at).days} days"

    @admin.action(description="Refresh tokens now")
    def refresh_now(self, request, queryset):
        for connection in queryset:
            try:
                tokens.refresh(connection.pk, force=True)
            except tokens.TokenUnavailable as exc:
                self.message_user(request, f"{connection}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{connection}: refreshed.", messages.SUCCESS)

    @admin.action(description="Disable (stop refreshing and syncing)")
    def disable(self, request, queryset):
        for connection in queryset.exclude(status=Connection.Status.DISABLED):
            Connection.objects.filter(pk=connection.pk).update(
                status=Connection.Status.DISABLED,
                status_reason=f"Disabled by {request.user} in the admin.",
            )
            audit.record(
                AuditEvent.Kind.DISABLED,
                "Disabled in the admin.",
                connection=connection,
                actor=request.user,
            )
        self.message_user(request, "Disabled.", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(TenantScopedAdmin):
    tenant_admin_can_add = tenant_admin_can_change = tenant_admin_can_delete = False
    list_display = ["created_at", "kind", "tenant", "app", "connection", "actor", "message"]
    list_filter = ["kind"]
    list_select_related = ["tenant", "app", "connection", "actor"]
    search_fields = ["message", "app__client_id", "connection__user_principal_name"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    def get_list_filter(self, request):
        filters = list(super().get_list_filter(request))
        return ["tenant", *filters] if request.user.is_superuser else filters

    def has_add_permission(self, request, *args) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]


admin.site.site_header = "Graphport administration"
admin.site.site_title = "Graphport"


@admin.register(AuthorizationAttempt)
class AuthorizationAttemptAdmin(TenantScopedAdmin):
    tenant_lookup = "app__tenant"
    tenant_admin_can_add = tenant_admin_can_change = tenant_admin_can_delete = False
    list_display = ["created_at", "kind", "user", "app", "outcome", "error_code", "error"]
    list_filter = ["outcome", "kind"]
    list_select_related = ["user", "app"]
    search_fields = ["user__username", "error_code", "trace_id", "app__client_id"]
    fields = [
        "kind",
        "user",
        "app",
        "outcome",
        "error",
        "error_code",
        "error_description",
        "trace_id",
        "connection",
        "return_path",
        "created_at",
        "expires_at",
        "used_at",
    ]
    readonly_fields = fields
    show_full_result_count = False

    def has_add_permission(self, request, *args) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


from connections import member_admin  # noqa: E402,F401  (registers the Member admin)
