"""Tenants, their memberships and their members (logins) in the admin."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth.forms import SetPasswordMixin
from django.db import transaction
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from connections import connect_sessions
from connections.models import (
    Member,
    Membership,
    Tenant,
)
from connections.tenancy import TenantScopedAdmin, TenantScopedInline, admin_tenant


class MembershipInline(TenantScopedInline, admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    tenant_admin_can_add = tenant_admin_can_change = tenant_admin_can_delete = False


# Names and usernames are unique across every tenant, so "already exists" would tell one tenant
# that another has it. Every refusal reads the same, whatever the reason.
NOT_AVAILABLE = "This {} is not available: choose another."


class TenantForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = ["name", "return_origins"]
        error_messages = {"name": {"unique": NOT_AVAILABLE.format("name")}}
        widgets = {"return_origins": forms.Textarea(attrs={"rows": 3})}

    def clean_return_origins(self) -> str:
        lines = [line.strip() for line in self.cleaned_data["return_origins"].splitlines()]
        lines = [line for line in lines if line]
        problems = [p for p in map(connect_sessions.origin_problem, lines) if p]
        if problems:
            raise forms.ValidationError(problems)
        return "\n".join(connect_sessions.origin_of(line) for line in lines)


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdmin):
    form = TenantForm
    tenant_lookup = "pk"
    tenant_admin_can_add = tenant_admin_can_delete = False
    list_display = ["name", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]


class MemberForm(SetPasswordMixin, forms.ModelForm):
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.all())
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)
    password1, password2 = SetPasswordMixin.create_password_fields()

    class Meta:
        model = Member
        fields = ("username", "first_name", "last_name", "email", "is_active")
        error_messages = {"username": {"unique": NOT_AVAILABLE.format("username")}}

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        tenant = admin_tenant(request.user) if request else None
        if tenant is not None:
            self.fields["tenant"].queryset = Tenant.objects.filter(pk=tenant.pk)
            self.fields["tenant"].initial = tenant
            self.fields["tenant"].empty_label = None
        membership = getattr(self.instance, "membership", None) if self.instance.pk else None
        if membership:
            self.fields["tenant"].initial = membership.tenant
            self.fields["role"].initial = membership.role
        if self.instance.pk:  # an existing member keeps the password unless a new one is set
            self.fields["password1"].required = self.fields["password2"].required = False
        self.fields["email"].required = True
        self.fields["email"].help_text = "Password-reset mails go here."

    def clean(self):
        cleaned = super().clean()
        self.validate_passwords()
        return cleaned

    def _post_clean(self):
        super()._post_clean()
        self.validate_password_for_user(self.instance)

    @transaction.atomic
    def save(self, commit=True):
        user = super().save(commit=False)
        if self.cleaned_data.get("password1"):
            user.set_password(self.cleaned_data["password1"])
        role = self.cleaned_data["role"]
        # Tenant administrators work in the admin; members never do. Nobody here becomes a
        # superuser: only operators make operators.
        user.is_staff = role == Membership.Role.ADMIN
        user.save()
        Membership.objects.update_or_create(
            user=user, defaults={"tenant": self.cleaned_data["tenant"], "role": role}
        )
        return user

    def save_m2m(self):
        pass


class MemberAdmin(TenantScopedAdmin):
    tenant_lookup = "membership__tenant"
    form = MemberForm
    list_display = [
        "username",
        "email",
        "full_name",
        "role",
        "tenant_name",
        "is_active",
        "last_login",
    ]
    list_filter = ["membership__role", "is_active"]
    list_select_related = ["membership", "membership__tenant"]
    search_fields = ["username", "email", "first_name", "last_name"]
    fieldsets = [
        (None, {"fields": ["username", "email", "first_name", "last_name"]}),
        ("Organisation", {"fields": ["tenant", "role", "is_active"]}),
        (
            "Password",
            {
                "fields": ["password1", "password2"],
                "description": "Set it for a new member; leave empty to keep it.",
            },
        ),
    ]

    @method_decorator(sensitive_post_parameters("password1", "password2"))
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)

        class RequestForm(form):
            def __init__(self, *args, **inner):
                super().__init__(*args, request=request, **inner)

        return RequestForm

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if not request.user.is_superuser:
            # Operators are not members of a tenant; never list or edit them here.
            queryset = queryset.filter(is_superuser=False)
        return queryset

    @admin.display(description="Name")
    def full_name(self, obj: Member) -> str:
        return obj.get_full_name()

    @admin.display(description="Role", ordering="membership__role")
    def role(self, obj: Member) -> str:
        membership = getattr(obj, "membership", None)
        return membership.get_role_display() if membership else "—"

    @admin.display(description="Tenant", ordering="membership__tenant__name")
    def tenant_name(self, obj: Member) -> str:
        membership = getattr(obj, "membership", None)
        return membership.tenant.name if membership else "—"

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.pk == request.user.pk:
            return False  # an administrator cannot delete their own login
        return super().has_delete_permission(request, obj)


admin.site.register(Member, MemberAdmin)
