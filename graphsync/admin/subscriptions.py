from __future__ import annotations

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from connections.tenancy import TenantFilterForOperators, TenantScopedAdmin
from core.formatting import badge, short
from graphsync import subscriptions
from graphsync.models import Subscription

STATUS_TONES = {
    Subscription.Status.ACTIVE: "ok",
    Subscription.Status.FAILED: "bad",
    Subscription.Status.REMOVED: "warn",
}


@admin.register(Subscription)
class SubscriptionAdmin(TenantFilterForOperators, TenantScopedAdmin):
    """Subscriptions come and go with their jobs (graphsync.subscriptions): read-only here, but
    for renewing one at once."""

    tenant_admin_can_add = tenant_admin_can_delete = False
    list_display = [
        "account",
        "job_resource",
        "resource",
        "status_badge",
        "expires_at",
        "last_notification_at",
        "notification_count",
        "lifecycle_count",
        "short_error",
    ]
    list_filter = ["status", "job__resource"]
    list_select_related = ["job__connection", "tenant"]
    search_fields = ["=graph_id", "job__connection__user_principal_name"]
    actions = ["renew_now"]
    show_full_result_count = False
    fields = [
        "job_link",
        "tenant",
        "graph_id",
        "resource",
        "change_types",
        "status",
        "expires_at",
        "renewed_at",
        "created_at",
        "last_notification_at",
        "notification_count",
        "last_lifecycle_event",
        "lifecycle_count",
        "failure_streak",
        "next_attempt_at",
        "last_error",
    ]
    readonly_fields = fields  # clientState is a secret: never shown

    def has_add_permission(self, request, *args) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # it would live on at Microsoft: disable the job instead

    @admin.display(description="Connection", ordering="job__connection__user_principal_name")
    def account(self, obj: Subscription) -> str:
        connection = obj.job.connection
        return connection.user_principal_name or connection.display_name or "app-only"

    @admin.display(description="Job", ordering="job__resource")
    def job_resource(self, obj: Subscription) -> str:
        folder = f" {obj.job.folder}" if obj.job.folder else ""
        return f"{obj.job.get_resource_display()}{folder}"

    @admin.display(description="Job")
    def job_link(self, obj: Subscription) -> str:
        url = reverse("admin:graphsync_syncjob_change", args=[obj.job_id])
        return format_html('<a href="{}">{}</a>', url, obj.job)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Subscription) -> str:
        return badge(obj.get_status_display(), STATUS_TONES.get(obj.status, "none"))

    @admin.display(description="Last error")
    def short_error(self, obj: Subscription) -> str:
        return short(obj.last_error)

    @admin.action(description="Renew now (recreate if Microsoft lost it)", permissions=["change"])
    def renew_now(self, request, queryset):
        done: dict[str, int] = {}
        for job_id in queryset.values_list("job_id", flat=True):
            result = subscriptions.ensure(job_id, renew_now=True)
            done[result] = done.get(result, 0) + 1
        failed = sum(n for result, n in done.items() if "fail" in result)
        summary = ", ".join(f"{result}: {n}" for result, n in sorted(done.items()))
        level = messages.WARNING if failed else messages.SUCCESS
        self.message_user(request, f"Subscriptions renewed ({summary}).", level)
