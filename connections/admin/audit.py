from __future__ import annotations

from django.contrib import admin

from connections.models import (
    AuditEvent,
)
from connections.tenancy import TenantScopedAdmin


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
