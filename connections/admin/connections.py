from __future__ import annotations

from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from connections import audit, tokens
from connections.models import (
    AuditEvent,
    AuthorizationAttempt,
    Connection,
)
from connections.tenancy import TenantScopedAdmin, TenantScopedInline
from core.formatting import badge


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
    extra_lookups = ("status__in", "status_reason__startswith")  # the dashboard's links
    list_select_related = ["app", "app__tenant", "user"]
    search_fields = [
        "user_principal_name",
        "display_name",
        "email",
        "ms_object_id",
        "ms_tenant_id",
        "user__username",
        "=end_user_id",
    ]
    actions = ["refresh_now", "disable"]
    inlines = [ConnectionEventInline]
    show_full_result_count = False
    fieldsets = [
        (None, {"fields": ["app", "user", "kind", "status", "status_reason"]}),
        (
            "Your end user (connected through a connect session)",
            {"fields": ["end_user_id", "end_user_email", "end_user_name"]},
        ),
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
        ("Sync", {"fields": ["sync_overview"]}),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]
    readonly_fields = [
        "sync_overview",
        "app",
        "user",
        "end_user_id",
        "end_user_email",
        "end_user_name",
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
        return badge(obj.get_status_display(), obj.status_tone)

    @admin.display(description="Refresh token age")
    def refresh_token_age(self, obj: Connection) -> str:
        if obj.refresh_token_updated_at is None:
            return "—"
        return f"{(timezone.now() - obj.refresh_token_updated_at).days} days"

    @admin.display(description="Sync jobs")
    def sync_overview(self, obj: Connection) -> str:
        # By URL name and reverse relation only: graphsync builds on connections, not the reverse.
        jobs = obj.sync_jobs.order_by("resource", "folder")
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:graphsync_syncjob_change", args=[job.pk]),
                    f"{job.get_resource_display()} {job.folder}".strip(),
                    job.get_state_display(),
                    f"{job.last_run_at:%Y-%m-%d %H:%M} UTC" if job.last_run_at else "never",
                    job.last_error or job.disabled_reason or "",
                )
                for job in jobs
            ),
        )
        if not rows:
            return "No sync jobs."
        query = f"?connection__id__exact={obj.pk}"
        return format_html(
            "<table><tr><th>Job</th><th>State</th><th>Last run</th><th>Error</th></tr>{}</table>"
            '<p><a href="{}{}">All jobs</a> · <a href="{}{}">records</a></p>',
            rows,
            reverse("admin:graphsync_syncjob_changelist"),
            query,
            reverse("admin:graphsync_record_changelist"),
            query,
        )

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
        "invitation",
        "connect_too",
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
