"""Organisation-wide sync in the admin: its settings, its progress and its members, scoped per
tenant (connections.tenancy).

A user's mailbox status and the organisation's progress come from graphsync.orgprogress, which
groups the jobs in the database: the pages cost the same few queries with ten users or ten
thousand.
"""

from __future__ import annotations

import re

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value, unquote
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.db.models import (
    Count,
    OuterRef,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce
from django.http import Http404
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from connections.models import Connection
from connections.tenancy import ReadOnlyAdmin, TenantFilterForOperators, TenantScopedAdmin
from core.encryption import EncryptedTextField
from core.formatting import badge, plural, short
from graphsync import orgsync
from graphsync.models import OrgMember, OrgSync, Record, Resource, SyncJob
from graphsync.orgprogress import MailboxStatus, progress, with_mailbox_status

#: a form names this many unknown entries, then a count
MAX_NAMED = 10
EDITABLE = [
    "enabled",
    "scope",
    "groups",
    "users",
    "mailbox_only",
    "alongside_delegated",
    "retention",
]
#: never loaded on these pages (connections.tenancy defers them on the lists' related rows)
SECRETS = [
    field.name
    for field in Connection._meta.concrete_fields
    if isinstance(field, EncryptedTextField)
]
CONNECTION_REFUSED = (
    "Choose one of your tenant's app-only connections (made by granting admin consent on an "
    "app registration) that has no organisation-wide sync yet: a delegated connection reads "
    "one user's data only."
)


# --- presentation -----------------------------------------------------------------------------


STATUS_TONES = {
    MailboxStatus.DONE: "ok",
    MailboxStatus.IN_PROGRESS: "warn",
    MailboxStatus.WAITING: "none",
    MailboxStatus.DISABLED: "bad",
}


class DirectoryGroupsField(forms.MultipleChoiceField):
    """Groups by name, stored as Graph ids. Any id passes here: the form checks them against the
    chosen connection's directory and names every unknown one at once."""

    def valid_value(self, value) -> bool:
        return True


class UserListField(forms.CharField):
    """Graph ids or user principal names, one a line (commas, semicolons and spaces also
    separate), stored as a list without repeats."""

    def prepare_value(self, value):
        return "\n".join(str(entry) for entry in value) if isinstance(value, list) else value

    def to_python(self, value) -> list[str]:
        unique: dict[str, str] = {}
        for entry in re.split(r"[\s,;]+", super().to_python(value) or ""):
            if entry:
                unique.setdefault(entry.lower(), entry)
        return list(unique.values())


def _named(entries: list[str]) -> str:
    shown = ", ".join(entries[:MAX_NAMED])
    hidden = len(entries) - MAX_NAMED
    return f"{shown} and {hidden:,} more" if hidden > 0 else shown


def _groups(connections: QuerySet[Connection]) -> QuerySet[Record]:
    return Record.objects.filter(
        connection__in=connections, resource=Resource.GROUPS, deleted_at__isnull=True
    )


class OrgSyncForm(forms.ModelForm):
    groups = DirectoryGroupsField(
        required=False,
        widget=FilteredSelectMultiple("groups", is_stacked=False),
        help_text="The groups of the connection's synced directory (its Directory groups job), "
        "by name. Their members are in scope, as their membership changes.",
    )
    users = UserListField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60}),
        help_text="Graph object ids or user principal names, one a line; each must be a user of "
        "the connection's synced directory (its Directory users job).",
    )

    class Meta:
        model = OrgSync
        fields = ["connection", *EDITABLE]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            self.fields["enabled"].initial = True
        self.fields["groups"].choices = self._group_choices()

    def _candidates(self) -> QuerySet[Connection]:
        field = self.fields.get("connection")  # absent once saved: then it is read-only
        if field is not None:
            return field.queryset
        return Connection.objects.filter(pk=self.instance.connection_id)

    def _group_choices(self) -> list[tuple[str, str]]:
        rows = list(
            _groups(self._candidates())
            .order_by("title", "graph_id")
            .values_list("graph_id", "title", "connection__ms_tenant_id")
        )
        several = len({tid for _, _, tid in rows}) > 1
        choices = [
            (gid, f"{title or gid} ({tid})" if several else title or gid)
            for gid, title, tid in rows
        ]
        # Kept on the page, not dropped: a group gone from the directory since it was chosen,
        # and an id sent with a refused form; the form says which are unknown.
        known = {gid for gid, _ in choices}
        chosen = list(self.instance.groups or [])
        if self.is_bound and hasattr(self.data, "getlist"):
            chosen += self.data.getlist(self.add_prefix("groups"))
        for gid in dict.fromkeys(str(g) for g in chosen):
            if gid not in known:
                choices.append((gid, f"Unknown group {gid}"))
        return choices

    def clean(self):
        cleaned = super().clean()
        if "connection" in self.fields:
            connection = cleaned.get("connection")
        else:
            connection = self.instance.connection
        if connection is None:
            return cleaned  # the connection field's own error says why
        scope = cleaned.get("scope")
        if scope == OrgSync.Scope.GROUPS and "groups" in cleaned:
            self._check_groups(connection, cleaned["groups"])
        if scope == OrgSync.Scope.LISTED and "users" in cleaned:
            self._check_users(connection, cleaned["users"])
        return cleaned

    def _check_groups(self, connection: Connection, groups: list[str]) -> None:
        if not groups:
            self.add_error("groups", "Choose at least one group for the scope “members of groups”.")
            return
        known = set(
            _groups(Connection.objects.filter(pk=connection.pk))
            .filter(graph_id__in=groups)
            .values_list("graph_id", flat=True)
        )
        unknown = [gid for gid in groups if gid not in known]
        if unknown:
            self.add_error(
                "groups",
                f"Not groups of this connection's synced directory: {_named(unknown)}. Choose "
                "groups it lists (a new group shows after its Directory groups job has run).",
            )

    def _check_users(self, connection: Connection, users: list[str]) -> None:
        if not users:
            self.add_error("users", "List at least one user for the scope “listed users”.")
            return
        people = orgsync.directory(connection)
        known = {gid.lower() for gid in people}
        known |= {p.user_principal_name.lower() for p in people.values() if p.user_principal_name}
        unknown = [entry for entry in users if entry.lower() not in known]
        if unknown:
            self.add_error(
                "users",
                f"Not users of this connection's synced directory ({plural(len(people), 'user')}):"
                f" {_named(unknown)}. Check the spelling (a new user shows after the Directory "
                "users job has run).",
            )


# --- organisation-wide syncs --------------------------------------------------------------------


class PausedFilter(admin.SimpleListFilter):
    title = "paused"
    parameter_name = "paused"

    def lookups(self, request, model_admin):
        return [("yes", "Paused"), ("no", "Not paused")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(paused_at__isnull=self.value() == "no")
        return queryset


def members_url(org_id: int, **filters: str) -> str:
    query = "&".join(
        f"{key}={value}" for key, value in {"org__id__exact": org_id, **filters}.items()
    )
    return f"{reverse('admin:graphsync_orgmember_changelist')}?{query}"


@admin.register(OrgSync)
class OrgSyncAdmin(TenantFilterForOperators, TenantScopedAdmin):
    """Turned on and set here; turned off (not deleted, which would leave its users' jobs
    running): reconcile stops them then."""

    tenant_admin_can_delete = False
    form = OrgSyncForm
    list_display = ["account", "tenant", "state", "scope", "users_in_scope", "reconciled_at"]
    list_filter = ["enabled", "scope", PausedFilter]
    # Also on the change page (get_queryset), so the connection's tokens are never loaded.
    list_select_related = ["connection", "connection__app", "tenant"]
    search_fields = ["connection__ms_tenant_id", "connection__app__name"]
    ordering = ["-created_at"]
    actions = ["reconcile_now", "resume"]
    fieldsets = [
        (None, {"fields": ["connection", "enabled"]}),
        (
            "Who is in scope",
            {
                "fields": [
                    "scope",
                    "groups",
                    "users",
                    "mailbox_only",
                    "alongside_delegated",
                    "retention",
                ]
            },
        ),
    ]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        in_scope = (
            OrgMember.objects.filter(org=OuterRef("pk"), state=OrgMember.State.IN_SCOPE)
            .order_by()
            .values("org")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .select_related(*self.list_select_related)
            .annotate(in_scope=Coalesce(Subquery(in_scope), 0))
        )

    def get_readonly_fields(self, request, obj=None):
        return ["connection"] if obj is not None else []

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "connection":
            field.queryset = (
                field.queryset.filter(kind=Connection.Kind.APPLICATION, orgsync__isnull=True)
                .select_related("app")
                .defer(*SECRETS)
            )
            field.error_messages["invalid_choice"] = CONNECTION_REFUSED
            field.help_text = "The app-only connection made by granting admin consent."
        return field

    def save_model(self, request, obj: OrgSync, form, change):
        obj.tenant_id = obj.connection.app.tenant_id
        if change:
            # Only what the form edits: pause() and reconcile write the other columns meanwhile.
            changed = [name for name in form.changed_data if name in EDITABLE]
            if changed:
                obj.save(update_fields=changed)
        else:
            obj.save()
        orgsync.settings_saved(obj, request.user, form.changed_data if change else [])

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.pk:
            granted = orgsync.granted_resources(obj.connection)
            readable = dict.fromkeys(orgsync.ROLE_RESOURCES.values())
            context.update(
                progress=progress(obj),
                members_url=members_url(obj.pk),
                readable=[Resource(r).label for r in readable if r in granted],
                not_granted=[Resource(r).label for r in readable if r not in granted],
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.display(description="Connection", ordering="connection__ms_tenant_id")
    def account(self, obj: OrgSync) -> str:
        return f"{obj.connection.app.name}: app-only in {obj.connection.ms_tenant_id}"

    @admin.display(description="State")
    def state(self, obj: OrgSync) -> str:
        if obj.paused_at:
            return format_html("{} {}", badge("paused", "bad"), short(obj.paused_reason))
        return badge("on", "ok") if obj.enabled else badge("off", "none")

    @admin.display(description="Users in scope", ordering="in_scope")
    def users_in_scope(self, obj: OrgSync) -> str:
        return format_html(
            '<a href="{}">{}</a>',
            members_url(obj.pk, state__exact=OrgMember.State.IN_SCOPE),
            f"{obj.in_scope:,}",
        )

    # --- actions and the change page's buttons ------------------------------------------------

    @admin.action(
        description="Reconcile now (bring users and jobs in line with the scope)",
        permissions=["change"],
    )
    def reconcile_now(self, request, queryset):
        for org in queryset:
            summary = orgsync.reconcile(org.pk)
            self.message_user(request, f"{org}: {summary}.", messages.SUCCESS)
            if org.paused_at:
                self.message_user(
                    request,
                    f"{org} is paused: its users' jobs stay stopped until it is resumed.",
                    messages.WARNING,
                )

    @admin.action(description="Resume (the missing permission was granted)", permissions=["change"])
    def resume(self, request, queryset):
        paused = [org for org in queryset if org.paused_at]
        for org in paused:
            summary = orgsync.resume(org, request.user)
            self.message_user(request, f"{org} resumed: {summary}.", messages.SUCCESS)
        if not paused:
            self.message_user(request, "None of them was paused: nothing to resume.")

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/reconcile/",
                view(self.reconcile_view),
                name="graphsync_orgsync_reconcile",
            ),
            path(
                "<path:object_id>/resume/", view(self.resume_view), name="graphsync_orgsync_resume"
            ),
            *super().get_urls(),
        ]

    def _button(self, request, object_id: str, action) -> object:
        org = self.get_object(request, unquote(object_id))
        if org is None:  # another tenant's, or none: the same answer
            raise Http404("No organisation-wide sync with this ID.")
        if request.method == "POST" and self.has_change_permission(request, org):
            action(request, self.get_queryset(request).filter(pk=org.pk))
        return redirect(reverse("admin:graphsync_orgsync_change", args=[org.pk]))

    def reconcile_view(self, request, object_id):
        return self._button(request, object_id, self.reconcile_now)

    def resume_view(self, request, object_id):
        return self._button(request, object_id, self.resume)


# --- members ------------------------------------------------------------------------------------


class MailboxFilter(admin.SimpleListFilter):
    title = "mailbox"
    parameter_name = "mailbox"

    def lookups(self, request, model_admin):
        return MailboxStatus.choices

    def queryset(self, request, queryset):
        if self.value() in MailboxStatus.values:
            return queryset.filter(mailbox_status=self.value())
        return queryset


@admin.register(OrgMember)
class OrgMemberAdmin(ReadOnlyAdmin):
    """Who an organisation-wide sync has had in scope: read-only, kept by reconcile."""

    list_display = ["user", "state", "mailbox", "records", "last_success", "joined_at", "left_at"]
    list_filter = ["state", MailboxFilter]
    extra_lookups = ("org__id__exact",)  # the organisation's page
    # Also on the change page (get_queryset), so the connection's tokens are never loaded.
    list_select_related = ["org", "org__connection", "org__connection__app"]
    search_fields = ["user_principal_name", "display_name", "=graph_id"]
    # The status columns are a subquery per row: sorting by them would compute every row's.
    sortable_by = ["user", "state", "joined_at", "left_at"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = None
    fields = [
        "organisation",
        "user_principal_name",
        "display_name",
        "mail",
        "graph_id",
        "state",
        "left_reason",
        "joined_at",
        "left_at",
        "mailbox",
        "records",
        "last_success",
        "jobs",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        queryset = super().get_queryset(request).select_related(*self.list_select_related)
        return with_mailbox_status(queryset)

    @admin.display(description="User", ordering="user_principal_name")
    def user(self, obj: OrgMember) -> str:
        if obj.display_name and obj.user_principal_name:
            return format_html("{}<br><small>{}</small>", obj.user_principal_name, obj.display_name)
        return str(obj)

    @admin.display(description="Mailbox")
    def mailbox(self, obj: OrgMember) -> str:
        mailbox = MailboxStatus(obj.mailbox_status)
        status = badge(mailbox.label, STATUS_TONES[mailbox])
        if obj.mailbox_status == MailboxStatus.DISABLED:
            return format_html("{} {}", status, short(obj.stopped_reason or ""))
        if obj.stopped:
            stopped = plural(obj.stopped, "job")
            return format_html("{} {} stopped: {}", status, stopped, short(obj.stopped_reason))
        return status

    @admin.display(description="Records")
    def records(self, obj: OrgMember) -> str:
        return f"{obj.records:,}"

    @admin.display(description="Last success")
    def last_success(self, obj: OrgMember) -> str:
        return display_for_value(obj.last_success, self.get_empty_value_display())

    @admin.display(description="Organisation-wide sync")
    def organisation(self, obj: OrgMember) -> str:
        url = reverse("admin:graphsync_orgsync_change", args=[obj.org_id])
        return format_html('<a href="{}">{}</a>', url, obj.org)

    @admin.display(description="Jobs")
    def jobs(self, obj: OrgMember) -> str:
        jobs = SyncJob.objects.filter(
            connection_id=obj.org.connection_id, mailbox=obj.graph_id
        ).order_by("resource", "folder")
        rows = [
            (
                reverse("admin:graphsync_syncjob_change", args=[job.pk]),
                f"{job.get_resource_display()} {job.folder}".strip(),
                job.get_state_display(),
                f"{job.last_success_at:%Y-%m-%d %H:%M}" if job.last_success_at else "never",
                f"{job.live_count:,}",
                short(job.disabled_reason or job.last_error),
            )
            for job in jobs
        ]
        if not rows:
            return "None yet: reconcile creates them for a user in scope."
        return format_html(
            "<table><thead><tr><th>Job</th><th>State</th><th>Last success</th><th>Records</th>"
            "<th>Reason or last error</th></tr></thead><tbody>{}</tbody></table>",
            format_html_join(
                "",
                '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
                rows,
            ),
        )
