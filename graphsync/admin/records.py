from __future__ import annotations

import json

from django.contrib import admin
from django.core.paginator import Paginator
from django.utils.functional import cached_property
from django.utils.html import format_html

from connections.tenancy import TenantFilterForOperators, TenantScopedAdmin
from core.formatting import short
from graphsync.models import Record


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
    extra_lookups = ("job__id__exact", "connection__id__exact")  # the job and connection pages
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
        return short(obj.title or obj.graph_id)

    @admin.display(description="Connection")
    def account(self, obj: Record) -> str:
        connection = obj.connection
        return connection.user_principal_name or connection.display_name or "app-only"

    @admin.display(description="Data (JSON)")
    def pretty_data(self, obj: Record) -> str:
        text = json.dumps(obj.data, indent=2, ensure_ascii=False, sort_keys=True)
        return format_html('<pre style="white-space:pre-wrap;max-width:100%">{}</pre>', text)
