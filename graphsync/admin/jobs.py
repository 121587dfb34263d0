from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from connections.tenancy import TenantFilterForOperators, TenantScopedAdmin
from core.formatting import badge, interval, short
from graphsync import resources, scheduling
from graphsync.admin.common import changelist_link
from graphsync.admin.runs import RecentRunsInline
from graphsync.models import SyncJob

STATE_TONES = {
    SyncJob.State.IDLE: "ok",
    SyncJob.State.WAITING: "warn",
    SyncJob.State.FAILING: "bad",
}


#: A job has a handful of options; a pasted object with thousands of keys gets this many
#: messages, then a count.
MAX_PROBLEMS_SHOWN = 10


class SyncJobForm(forms.ModelForm):
    interval_seconds = forms.IntegerField(
        min_value=60,
        help_text="Between the end of one successful run and the next (at least 60 seconds: "
        "Graph throttles a mailbox at 10,000 requests per 10 minutes, shared by every job).",
    )

    class Meta:
        model = SyncJob
        fields = ["enabled", "interval_seconds", "options"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "options" in self.fields:
            allowed = sorted(resources.OPTIONS.get(self.instance.resource, {}))
            self.fields["options"].help_text = (
                f"A JSON object with any of: {', '.join(allowed)}." if allowed else "None."
            )

    def clean_options(self):
        # Checked here with the rules a run applies (graphsync.resources.OPTIONS): a value the
        # run would have to ignore is refused while the administrator is still on the page.
        options = self.cleaned_data["options"]
        problems = resources.option_problems(self.instance.resource, options)
        if len(problems) > MAX_PROBLEMS_SHOWN:
            hidden = len(problems) - MAX_PROBLEMS_SHOWN
            problems = [*problems[:MAX_PROBLEMS_SHOWN], f"… and {hidden:,} more."]
        if problems:
            raise forms.ValidationError(problems)
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
    # The dashboard's and the connection page's links.
    extra_lookups = (
        "disabled_reason__gt",
        "failure_streak__gt",
        "last_error__startswith",
        "connection__id__exact",
        "mailbox__exact",  # one user's jobs of an organisation-wide sync
    )
    # The app too: each row's checkbox is labelled with the job's name, which names its
    # connection's app.
    list_select_related = ["connection__app", "tenant"]
    search_fields = ["connection__user_principal_name", "=connection__ms_object_id", "=mailbox"]
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
                    "polling",
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
        "polling",
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
                obj.enable()
            else:
                obj.disable(f"Disabled by {request.user} in the admin.")

    @admin.display(description="Connection", ordering="connection__user_principal_name")
    def account(self, obj: SyncJob) -> str:
        connection = obj.connection
        return connection.user_principal_name or connection.display_name or "app-only"

    @admin.display(description="State", ordering="state")
    def state_badge(self, obj: SyncJob) -> str:
        return badge(obj.get_state_display(), STATE_TONES.get(obj.state, "none"))

    @admin.display(description="Last error")
    def short_error(self, obj: SyncJob) -> str:
        return short(obj.last_error or obj.disabled_reason)

    @admin.display(description="Polling")
    def polling(self, obj: SyncJob) -> str:
        seconds = scheduling.poll_interval(obj)
        if seconds == obj.interval_seconds:
            return f"every {interval(seconds)}"
        return f"every {interval(seconds)}: change notifications report the rest"

    @admin.display(description="Cursor")
    def cursor_preview(self, obj: SyncJob) -> str:
        if not obj.cursor:
            return "— (the next run reads everything)"
        kind = "delta link" if obj.cursor_is_delta else "next page"
        return format_html(
            "<code>{}</code> ({}, {} characters)", short(obj.cursor, 100), kind, len(obj.cursor)
        )

    @admin.display(description="Synced data")
    def synced(self, obj: SyncJob) -> str:
        return format_html(
            "{} · {}",
            changelist_link("record", "records", job__id__exact=obj.pk),
            changelist_link("syncrun", "all runs", job__id__exact=obj.pk),
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
            scheduling.run_now(job)
        if chosen:
            self.message_user(request, f"{len(chosen)} job(s) queued to run now.", messages.SUCCESS)

    @admin.action(description="Full resync (forget the delta cursor)", permissions=["change"])
    def full_resync(self, request, queryset):
        chosen = self._split_enabled(request, queryset, "reset")
        for job in chosen:
            scheduling.full_resync(job)
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
            job.enable()
        self.message_user(request, f"{len(chosen)} job(s) enabled, due now.", messages.SUCCESS)

    @admin.action(description="Disable", permissions=["change"])
    def disable_jobs(self, request, queryset):
        chosen = list(queryset.filter(enabled=True))
        for job in chosen:
            job.disable(f"Disabled by {request.user} in the admin.")
        self.message_user(request, f"{len(chosen)} job(s) disabled.", messages.SUCCESS)
