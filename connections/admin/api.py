"""The customer API in the admin: API keys (made here, the key shown once, listed with their
last use, revoked) and the connect sessions made with them."""

from __future__ import annotations

from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html

from connections import apikeys
from connections.models import ApiKey, ConnectSession
from connections.tenancy import TenantFilterForOperators, TenantScopedAdmin, admin_tenant
from core.formatting import badge


@admin.register(ApiKey)
class ApiKeyAdmin(TenantFilterForOperators, TenantScopedAdmin):
    list_display = [
        "name",
        "tenant",
        "prefix_shown",
        "permission",
        "state",
        "created_by",
        "created_at",
        "last_used_at",
        "last_used_ip",
    ]
    list_filter = ["permission"]
    list_select_related = ["tenant", "created_by"]
    search_fields = ["name", "prefix"]
    actions = ["revoke"]
    tenant_admin_can_delete = False  # revoked, never deleted: the audit trail names them
    readonly_fields = [
        "prefix_shown",
        "state",
        "created_by",
        "created_at",
        "last_used_at",
        "last_used_ip",
        "revoked_at",
    ]

    def get_fields(self, request, obj=None):
        editable = ["tenant", "name", "permission", "expires_at"]
        if obj is None:
            return editable
        return ["tenant", "name", "permission", "expires_at", *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        # A key's tenant and rights are what it was made with: make another key to change them.
        return ["tenant", "permission", *self.readonly_fields]

    @admin.display(description="Key")
    def prefix_shown(self, obj: ApiKey) -> str:
        return format_html("<code>{}…</code>", obj.prefix)

    @admin.display(description="State")
    def state(self, obj: ApiKey) -> str:
        if obj.revoked_at:
            return badge(f"revoked {obj.revoked_at:%Y-%m-%d}", "bad")
        if obj.expires_at and obj.expires_at <= timezone.now():
            return badge("expired", "bad")
        return badge("active", "ok")

    def save_model(self, request, obj: ApiKey, form, change):
        if not request.user.is_superuser:
            obj.tenant = admin_tenant(request.user)
        if change:
            super().save_model(request, obj, form, change)
            return
        raw = apikeys.new_raw()
        apikeys.stamp(obj, raw)
        obj.created_by = request.user
        super().save_model(request, obj, form, change)
        apikeys.recorded_created(obj)
        request._graphport_new_key = raw  # shown once, by response_add, and never stored

    def response_add(self, request, obj, post_url_continue=None):
        raw = getattr(request, "_graphport_new_key", None)
        if raw is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "key": obj,
            "raw": raw,
            "opts": self.model._meta,
        }
        response = TemplateResponse(request, "admin/connections/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        revoked = sum(apikeys.revoke(key, actor=request.user) for key in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)


@admin.register(ConnectSession)
class ConnectSessionAdmin(TenantFilterForOperators, TenantScopedAdmin):
    """What the API's connect sessions became: read-only, made through the API."""

    tenant_admin_can_add = tenant_admin_can_change = tenant_admin_can_delete = False
    list_display = [
        "end_user_id",
        "app",
        "outcome",
        "error",
        "created_at",
        "opened_at",
        "connection",
    ]
    list_filter = ["outcome"]
    list_select_related = ["app", "connection", "api_key"]
    search_fields = ["=end_user_id", "end_user_email"]
    fields = [
        "tenant",
        "app",
        "api_key",
        "end_user_id",
        "end_user_email",
        "end_user_name",
        "return_url",
        "created_at",
        "expires_at",
        "opened_at",
        "outcome",
        "error",
        "connection",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, *args) -> bool:
        return False  # made by POST /api/v1/connect-sessions
