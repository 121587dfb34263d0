"""Tenant scoping for the admin and the portal: a tenant administrator sees and edits only their
own tenant, and an operator may filter every list by tenant.

Every scoped ModelAdmin names the lookup path from its model to the Tenant. Querysets, object
permissions, foreign-key choices and hand-typed URLs all go through it, so another tenant's row
is never listed, never offered as a choice, and a URL naming one answers 404.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import Model, QuerySet
from django.http import Http404

from connections.models import Connection, EntraApp, Tenant
from core.encryption import EncryptedTextField

# What Django's own list filters and date hierarchy add to a declared filter's name.
FILTER_SUFFIXES = frozenset(
    f"__{suffix}"
    for suffix in (
        "exact",
        "in",
        "isnull",
        "gte",
        "gt",
        "lte",
        "lt",
        "id__exact",
        "id__in",
        "pk__exact",
        "year",
        "month",
        "day",
    )
)


def admin_tenant(user):
    """The tenant a staff user administers, or None (superusers administer every tenant)."""
    if not (user.is_active and user.is_staff) or user.is_superuser:
        return None
    membership = getattr(user, "membership", None)
    if membership is None or membership.role != membership.Role.ADMIN:
        return None
    return membership.tenant


def member_tenant(user):
    membership = getattr(user, "membership", None)
    return membership.tenant if membership else None


def _tenant_paths() -> dict[type[Model], str]:
    """How each tenant-owned model reaches its Tenant (for foreign-key choices)."""
    return {
        Tenant: "pk",
        EntraApp: "tenant",
        Connection: "app__tenant",
        get_user_model(): "membership__tenant",
    }


def _encrypted(model: type[Model], prefix: str = "") -> list[str]:
    return [
        f"{prefix}{field.name}"
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedTextField)
    ]


def _without_secrets(queryset: QuerySet, related: Iterable[str] = ()) -> QuerySet:
    """Secrets and tokens are never shown in the admin, so lists and pages never load (and
    decrypt) them, neither on their own rows nor on the rows `related` (the list's
    select_related paths) brings along; a form that sets one still saves it."""
    deferred = _encrypted(queryset.model)
    for path in related:
        model = queryset.model
        for part in path.split("__"):
            model = model._meta.get_field(part).related_model
        deferred += _encrypted(model, f"{path}__")
    return queryset.defer(*deferred) if deferred else queryset


def _scope_choices(field, db_field, request):
    lookup = _tenant_paths().get(db_field.related_model)
    if field is None or lookup is None or request.user.is_superuser:
        return field
    tenant = admin_tenant(request.user)
    queryset = field.queryset.filter(**{lookup: tenant.pk}) if tenant else field.queryset.none()
    field.queryset = queryset
    if db_field.related_model is Tenant:
        field.initial = tenant
        field.empty_label = None
    return field


class TenantScopedAdmin(admin.ModelAdmin):
    #: lookup from this admin's model to its Tenant, e.g. "tenant" or "app__tenant"
    tenant_lookup: str = "tenant"
    #: what a tenant administrator may do besides viewing (a superuser may do everything)
    tenant_admin_can_add = True
    tenant_admin_can_change = True
    tenant_admin_can_delete = True
    #: lookups that links elsewhere in Graphport put in this list's URL, besides its filters
    extra_lookups: tuple[str, ...] = ()

    def get_queryset(self, request) -> QuerySet:
        related = self.list_select_related
        paths = related if isinstance(related, list | tuple) else ()
        queryset = _without_secrets(super().get_queryset(request), paths)
        if request.user.is_superuser:
            return queryset
        tenant = admin_tenant(request.user)
        if tenant is None:
            return queryset.none()
        return queryset.filter(**{self.tenant_lookup: tenant.pk})

    def _owns(self, request, obj) -> bool:
        if obj is None:
            return True
        tenant = admin_tenant(request.user)
        return (
            tenant is not None
            and self.model._default_manager.filter(pk=obj.pk)
            .filter(**{self.tenant_lookup: tenant.pk})
            .exists()
        )

    def _allowed(self, request, obj, flag: bool, parent) -> bool:
        if request.user.is_superuser:
            return parent(request, obj) if obj is not None else parent(request)
        if admin_tenant(request.user) is None or not flag:
            return False
        return obj is None or self._owns(request, obj)

    def has_module_permission(self, request) -> bool:
        if request.user.is_superuser:
            return super().has_module_permission(request)
        return admin_tenant(request.user) is not None

    def has_view_permission(self, request, obj=None) -> bool:
        return self._allowed(request, obj, True, super().has_view_permission)

    def has_add_permission(self, request, *args) -> bool:
        if request.user.is_superuser:
            return super().has_add_permission(request, *args)
        return admin_tenant(request.user) is not None and self.tenant_admin_can_add

    def has_change_permission(self, request, obj=None) -> bool:
        return self._allowed(
            request, obj, self.tenant_admin_can_change, super().has_change_permission
        )

    def has_delete_permission(self, request, obj=None) -> bool:
        return self._allowed(
            request, obj, self.tenant_admin_can_delete, super().has_delete_permission
        )

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        return _scope_choices(field, db_field, request)

    def lookup_allowed(self, lookup: str, value: str, request=None) -> bool:
        """Only the filters this list declares, and the links Graphport makes to it.

        Django lets any lookup on the model's own columns through the URL, so
        `?password__startswith=pbkdf2_sha256$1` would tell a tenant administrator, one
        character at a time, what a column they never see holds."""
        if not super().lookup_allowed(lookup, value, request):
            return False
        if lookup in self.extra_lookups:
            return True
        declared = {self.date_hierarchy} if self.date_hierarchy else set()
        for item in self.get_list_filter(request):
            if isinstance(item, type) and issubclass(item, admin.SimpleListFilter):
                declared.add(item.parameter_name)
            else:
                declared.add(item[0] if isinstance(item, list | tuple) else item)
        for name in declared:
            rest = lookup.removeprefix(name)
            if rest == "" or (rest != lookup and rest in FILTER_SUFFIXES):
                return True
        return False

    def _get_obj_does_not_exist_redirect(self, request, opts, object_id):
        # Django redirects to the admin index with "doesn't exist"; for a row of another tenant
        # (or none at all) answer a plain 404 so a hand-typed URL learns nothing either way.
        raise Http404(f"No {opts.verbose_name} with this ID.")


class TenantScopedInline:
    """Mixin for inlines: tenant administrators get the same rights, and the same foreign-key
    scoping, as on the parent admin (whose queryset already keeps them to their tenant)."""

    tenant_admin_can_add = True
    tenant_admin_can_change = True
    tenant_admin_can_delete = True

    def get_queryset(self, request) -> QuerySet:
        return _without_secrets(super().get_queryset(request))

    def _tenant_admin_may(self, request, flag: bool) -> bool:
        return admin_tenant(request.user) is not None and flag

    def has_view_permission(self, request, obj=None) -> bool:
        if request.user.is_superuser:
            return super().has_view_permission(request, obj)
        return self._tenant_admin_may(request, True)

    def has_add_permission(self, request, obj) -> bool:
        if request.user.is_superuser:
            return super().has_add_permission(request, obj)
        return self._tenant_admin_may(request, self.tenant_admin_can_add)

    def has_change_permission(self, request, obj=None) -> bool:
        if request.user.is_superuser:
            return super().has_change_permission(request, obj)
        return self._tenant_admin_may(request, self.tenant_admin_can_change)

    def has_delete_permission(self, request, obj=None) -> bool:
        if request.user.is_superuser:
            return super().has_delete_permission(request, obj)
        return self._tenant_admin_may(request, self.tenant_admin_can_delete)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        return _scope_choices(field, db_field, request)


class TenantFilterForOperators:
    """Only operators see every tenant; a tenant administrator's lists hold one already."""

    def get_list_filter(self, request):
        filters = list(super().get_list_filter(request))
        return ["tenant", *filters] if request.user.is_superuser else filters


class ReadOnlyAdmin(TenantFilterForOperators, TenantScopedAdmin):
    """History and derived rows, scoped per tenant: nobody adds, changes or deletes them here."""

    tenant_admin_can_add = tenant_admin_can_change = tenant_admin_can_delete = False
    show_full_result_count = False

    def has_add_permission(self, request, *args) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
