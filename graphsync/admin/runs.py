from __future__ import annotations

from django.contrib import admin
from django.forms import BaseInlineFormSet

from connections.tenancy import TenantFilterForOperators, TenantScopedAdmin, TenantScopedInline
from core.formatting import badge, short
from graphsync.models import SyncRun

OUTCOME_TONES = {
    SyncRun.Outcome.SUCCEEDED: "ok",
    SyncRun.Outcome.DEFERRED: "warn",
    SyncRun.Outcome.FAILED: "bad",
    SyncRun.Outcome.INTERRUPTED: "warn",
}


class RecentRunsFormSet(BaseInlineFormSet):
    def get_queryset(self):
        # The newest ten only: a job that has run every 15 minutes for a year has 35,000 runs.
        return super().get_queryset()[:10]


class RecentRunsInline(TenantScopedInline, admin.TabularInline):
    model = SyncRun
    formset = RecentRunsFormSet
    extra = 0
    max_num = 0
    fields = ["started_at", "trigger", "outcome", "pages", "created", "updated", "deleted", "error"]
    readonly_fields = fields
    show_change_link = True
    verbose_name_plural = "recent runs (the last 10)"
    tenant_admin_can_add = tenant_admin_can_change = tenant_admin_can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(SyncRun)
class SyncRunAdmin(TenantFilterForOperators, TenantScopedAdmin):
    tenant_admin_can_add = tenant_admin_can_change = tenant_admin_can_delete = False
    list_display = [
        "started_at",
        "job",
        "trigger",
        "outcome_badge",
        "duration_seconds",
        "pages",
        "requests",
        "created",
        "updated",
        "deleted",
        "throttled",
        "seconds_waited",
        "full_resync",
        "short_error",
    ]
    list_filter = ["outcome", "trigger", "full_resync"]
    # The dashboard's and the job page's links.
    extra_lookups = ("error__startswith", "started_at__gte", "job__id__exact")
    list_select_related = ["job", "job__connection", "job__connection__app"]
    search_fields = ["job__connection__user_principal_name", "=job__connection__ms_object_id"]
    # One query per drill-down level on the indexed started_at: fine at this table's size.
    date_hierarchy = "started_at"
    show_full_result_count = False
    fields = [
        "job",
        "tenant",
        "trigger",
        "outcome",
        "full_resync",
        "started_at",
        "finished_at",
        "duration_seconds",
        "worker",
        "pages",
        "requests",
        "created",
        "updated",
        "deleted",
        "throttled",
        "seconds_waited",
        "error",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, *args) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Outcome", ordering="outcome")
    def outcome_badge(self, obj: SyncRun) -> str:
        return badge(obj.get_outcome_display(), OUTCOME_TONES.get(obj.outcome, "none"))

    @admin.display(description="Duration (s)")
    def duration_seconds(self, obj: SyncRun) -> str:
        return f"{obj.duration:.1f}"

    @admin.display(description="Error")
    def short_error(self, obj: SyncRun) -> str:
        return short(obj.error)
