"""Sync jobs, runs and records in the admin, scoped per tenant (portal.tenancy).

Records and runs are history: read-only for everyone. Jobs come from connections (graphsync.jobs)
and are never added or deleted here; operators change their schedule and switch them on and off.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.forms import BaseInlineFormSet
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.text import Truncator

from connections.admin.badges import badge
from graphsync import jobs
from graphsync.models import Record, SyncJob, SyncRun
from portal.tenancy import TenantScopedAdmin, TenantScopedInline

STATE_TONES = {
    SyncJob.State.IDLE: "ok",
    SyncJob.State.WAITING: "warn",
    SyncJob.State.FAILING: "bad",
}
OUTCOME_TONES = {
    SyncRun.Outcome.SUCCEEDED: "ok",
    SyncRun.Outcome.DEFERRED: "warn",
    SyncRun.Outcome.FAILED: "bad",
    SyncRun.Outcome.INTERRUPTED: "warn",
}


def _short(text: str, length: int = 80) -> str:
    return Truncator(text).chars(length) if text else "—"


def _changelist_link(model: str, text: str, **filters: int) -> str:
    query = "&".join(f"{key}={value}" for key, value in filters.items())
    return format_html(
        '<a href="{}?{}">{}</a>', reverse(f"admin:graphsync_{model}_changelist"), query, text
    )


class TenantFilterForOperators:
    """Only operators see every tenant; a tenant administrator's lists hold one already."""

    def get_list_filter(self, request):
        filters = list(super().get_list_filter(request))
        return ["tenant", *filters] if request.user.is_superuser else filters


# --- runs ------------------------------------------------------------------------------------


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
        return _short(obj.error)


# --- jobs ------------------------------------------------------------------------------------


class SyncJobForm(forms.ModelForm):
    interval_seconds = forms.IntegerField(
        min_value=60,
        help_text="Between the end of one successful run and the next (at least 60 seconds: "
        "Graph throttles a mailbox at 10,000 requests per 10 minutes, shared by every job).",
    )

    class Meta:
        model = SyncJob
        fields = ["enabled", "interval_seconds", "options"]

    def clean_options(self):
        options = self.cleaned_data["options"]
        if not isinstance(options, dict):
            raise forms.ValidationError('Options are a JSON object, e.g. {"page_size": 50}.')
        return options


@admin.register(SyncJob)
class SyncJobAdmin(TenantFilterForOperators, TenantScopedAdmin):
    tenant_admin_can_add = tenant_admin_can_delete = False
    form = SyncJobForm
    list_display = [
        "account",
        "resource",
        "folder",
        "state_badge",
        "enabled",
        "last_run_at",
        "last_success_at",
        "next_run_at",
        "failure_streak",
        "short_error",
    ]
    list_filter = ["state", "resource", "enabled"]
    list_select_related = ["connection", "tenant"]
    search_fields = ["connection__user_principal_name", "=connection__ms_object_id"]
    actions = ["run_now", "full_resync", "enable_jobs", "disable_jobs"]
    inlines = [RecentRunsInline]
    show_full_result_count = False
    fieldsets = [
        (None, {"fields": ["connection", "tenant", "resource", "folder", "synced"]}),
        (
            "Schedule",
            {
                "fields": [
                    "enabled",
                    "disabled_reason",
                    "interval_seconds",
                    "options",
                    "next_run_at",
                    "cooldown_until",
                ]
            },
        ),
        (
            "State",
            {
                "fields": [
                    "state",
                    "failure_streak",
                    "last_run_at",
                    "last_success_at",
                    "last_error",
                    "lease_owner",
                    "lease_expires_at",
                ]
            },
        ),
        (
            "Cursor",
            {"fields": ["cursor_preview", "cursor_is_delta", "resyncing", "generation"]},
        ),
        (None, {"fields": ["created_at"]}),
    ]
    readonly_fields = [
        "connection",
        "tenant",
        "resource",
        "folder",
        "synced",
        "disabled_reason",
        "next_run_at",
        "cooldown_until",
        "state",
        "failure_streak",
        "last_run_at",
        "last_success_at",
        "last_error",
        "lease_owner",
        "lease_expires_at",
        "cursor_preview",
        "cursor_is_delta",
        "resyncing",
        "generation",
        "created_at",
    ]

    def has_add_permission(self, request, *args) -> bool:
        return False  # jobs follow from a connection's granted scopes (graphsync.jobs)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a connection would get it back on reconnecting: disable it instead

    def save_model(self, request, obj, form, change):
        # Only the edited columns: a running worker writes the cursor, lease and state of this
        # same row page by page, and saving the whole form's copy would turn them back.
        fields = [name for name in form.changed_data if name in ("interval_seconds", "options")]
        if fields:
            obj.save(update_fields=fields)
        if "enabled" in form.changed_data:
            if obj.enabled:
                jobs.enable(obj)
            else:
                jobs.disable(obj, f"Disabled by {request.user} in the admin.")

    @admin.display(description="Connection", ordering="connection__user_principal_name")
    def account(self, obj: SyncJob) -> str:
        connection = obj.connection
        return connection.user_principal_name or connection.display_name or "app-only"

    @admin.display(description="State", ordering="state")
    def state_badge(self, obj: SyncJob) -> str:
        return badge(obj.get_state_display(), STATE_TONES.get(obj.state, "none"))

    @admin.display(description="Last error")
    def short_error(self, obj: SyncJob) -> str:
        return _short(obj.last_error or obj.disabled_reason)

    @admin.display(description="Cursor")
    def cursor_preview(self, obj: SyncJob) -> str:
        if not obj.cursor:
            return "— (the next run reads everything)"
        kind = "delta link" if obj.cursor_is_delta else "next page"
        return format_html(
            "<code>{}</code> ({}, {} characters)", _short(obj.cursor, 100), kind, len(obj.cursor)
        )

    @admin.display(description="Synced data")
    def synced(self, obj: SyncJob) -> str:
        return format_html(
            "{} · {}",
            _changelist_link("record", "records", job__id__exact=obj.pk),
            _changelist_link("syncrun", "all runs", job__id__exact=obj.pk),
        )

    # --- actions -------------------------------------------------------------------------------

    def _split_enabled(self, request, queryset, verb: str) -> list[SyncJob]:
        chosen = list(queryset)
        skipped = [job for job in chosen if not job.enabled]
        if skipped:
            self.message_user(
                request,
                f"{len(skipped)} disabled job(s) not {verb}: enable them first.",
                messages.WARNING,
            )
        return [job for job in chosen if job.enabled]

    @admin.action(description="Run now", permissions=["change"])
    def run_now(self, request, queryset):
        chosen = self._split_enabled(request, queryset, "run")
        for job in chosen:
            jobs.run_now(job)
        if chosen:
            self.message_user(request, f"{len(chosen)} job(s) queued to run now.", messages.SUCCESS)

    @admin.action(description="Full resync (forget the delta cursor)", permissions=["change"])
    def full_resync(self, request, queryset):
        chosen = self._split_enabled(request, queryset, "reset")
        for job in chosen:
            jobs.reset_to_full_resync(job)
        if chosen:
            self.message_user(
                request,
                f"{len(chosen)} job(s) reset: each reads everything again now, and marks what "
                "Microsoft no longer returns as deleted.",
                messages.SUCCESS,
            )

    @admin.action(description="Enable", permissions=["change"])
    def enable_jobs(self, request, queryset):
        chosen = list(queryset.filter(enabled=False))
        for job in chosen:
            jobs.enable(job)
        self.message_user(request, f"{len(chosen)} job(s) enabled, due now.", messages.SUCCESS)

    @admin.action(description="Disable", permissions=["change"])
    def disable_jobs(self, request, queryset):
        chosen = list(queryset.filter(enabled=True))
        for job in chosen:
            jobs.disable(job, f"Disabled by {request.user} in the admin.")
        self.message_user(request, f"{len(chosen)} job(s) disabled.", messages.SUCCESS)


# --- records ---------------------------------------------------------------------------------


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows. The changelist counts its filtered rows on every page, and on a
    table of millions an unfiltered COUNT(*) reads the whole table; a LIMIT inside the count
    bounds it. Past the cap the list says "more than" (admin/graphsync/record/pagination.html)."""

    CAP = 10_000

    @cached_property
    def _bounded_count(self) -> int:
        return self.object_list[: self.CAP + 1].count()

    @property
    def count(self) -> int:
        return min(self._bounded_count, self.CAP)

    @property
    def capped(self) -> bool:
        return self._bounded_count > self.CAP


class DeletedFilter(admin.SimpleListFilter):
    title = "deleted"
    parameter_name = "deleted"

    def lookups(self, request, model_admin):
        return [("no", "No (live)"), ("yes", "Yes")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(deleted_at__isnull=self.value() == "no")
        return queryset


@admin.register(Record)
class RecordAdmin(TenantFilterForOperators, TenantScopedAdmin):
    tenant_admin_can_add = tenant_admin_can_change = tenant_admin_can_delete = False
    list_display = ["label", "resource", "account", "occurred_at", "deleted_at", "updated_at"]
    # Connection has thousands of rows: it is filtered through ?connection__id__exact= links
    # from the connection and job pages, never offered as a list of choices.
    list_filter = ["resource", DeletedFilter]
    list_select_related = ["connection"]
    # Subject or name as typed, or a Graph id pasted whole (exact: the indexed column).
    search_fields = ["title", "=graph_id"]
    ordering = ["-id"]
    list_per_page = 50
    # Sorting millions of rows by an unindexed column is a full sort: keep the -id order.
    sortable_by = ()
    show_full_result_count = False
    # "Show counts" would count every filter choice over the whole table.
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator
    actions = None
    fields = [
        "job",
        "connection",
        "tenant",
        "resource",
        "graph_id",
        "change_key",
        "title",
        "occurred_at",
        "deleted_at",
        "generation",
        "created_at",
        "updated_at",
        "pretty_data",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        # The JSON can be large (mail bodies); the change page loads it with one more query.
        return super().get_queryset(request).defer("data")

    def has_add_permission(self, request, *args) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Title", ordering="title")
    def label(self, obj: Record) -> str:
        return _short(obj.title or obj.graph_id)

    @admin.display(description="Connection")
    def account(self, obj: Record) -> str:
        connection = obj.connection
        return connection.user_principal_name or connection.display_name or "app-only"

    @admin.display(description="Data (JSON)")
    def pretty_data(self, obj: Record) -> str:
        text = json.dumps(obj.data, indent=2, ensure_ascii=False, sort_keys=True)
        return format_html('<pre style="white-space:pre-wrap;max-width:100%">{}</pre>', text)
