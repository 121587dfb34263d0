"""Tenants, their memberships and their members (logins) in the admin."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.forms import SetPasswordMixin
from django.db import transaction
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.debug import sensitive_post_parameters

from connections import audit, connect_sessions
from connections.clouds import is_guid
from connections.models import (
    AuditEvent,
    Connection,
    EntraApp,
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


SIGN_IN_FIELDS = [
    "directory_id",
    "join_policy",
    "invitations_any_account",
    "signin_app",
    "require_admin_2fa",
]


class TenantForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = ["name", "return_origins", *SIGN_IN_FIELDS]
        error_messages = {
            "name": {"unique": NOT_AVAILABLE.format("name")},
            "directory_id": {"unique": NOT_AVAILABLE.format("directory")},
        }
        widgets = {"return_origins": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request
        if "signin_app" in self.fields:
            apps = EntraApp.objects.filter(tenant=self.instance.pk or -1, is_active=True)
            self.fields["signin_app"].queryset = apps
            self.fields["signin_app"].empty_label = "Graphport's sign-in app"

    def clean_return_origins(self) -> str:
        lines = [line.strip() for line in self.cleaned_data["return_origins"].splitlines()]
        lines = [line for line in lines if line]
        problems = [p for p in map(connect_sessions.origin_problem, lines) if p]
        if problems:
            raise forms.ValidationError(problems)
        return "\n".join(connect_sessions.origin_of(line) for line in lines)

    def clean_directory_id(self) -> str | None:
        value = (self.cleaned_data.get("directory_id") or "").strip().lower() or None
        if value is None or value == self.instance.directory_id:
            return value
        if not is_guid(value):
            raise forms.ValidationError(f"{value!r} is not a Directory (tenant) ID (a GUID).")
        operator = self.request is not None and self.request.user.is_superuser
        proven = Connection.objects.filter(
            app__tenant=self.instance.pk or -1,
            kind=Connection.Kind.APPLICATION,
            ms_tenant_id=value,
        ).exists()
        if not (operator or proven):
            # Anyone can type a directory's ID; only its administrators can grant admin consent
            # in it, so a consent proves the directory is this tenant's to trust.
            raise forms.ValidationError(
                "Graphport trusts a directory once one of its administrators has granted admin "
                "consent to one of your apps (Entra app registrations → Grant admin consent). "
                "Grant it first, or ask a Graphport operator."
            )
        return value

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("join_policy") == Tenant.JoinPolicy.DIRECTORY and not cleaned.get(
            "directory_id"
        ):
            self.add_error(
                "join_policy", "People can join from a directory only once it is verified."
            )
        return cleaned


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdmin):
    form = TenantForm
    tenant_lookup = "pk"
    tenant_admin_can_add = tenant_admin_can_delete = False
    list_display = ["name", "directory_id", "join_policy", "created_at"]
    search_fields = ["name", "=directory_id"]
    inlines = [MembershipInline]
    readonly_fields = ["signin_link"]
    fieldsets = [
        (None, {"fields": ["name"]}),
        ("Customer API", {"fields": ["return_origins"]}),
        (
            "Signing in",
            {
                "fields": [
                    "directory_id",
                    "join_policy",
                    "invitations_any_account",
                    "signin_app",
                    "signin_link",
                    "require_admin_2fa",
                ]
            },
        ),
    ]

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)

        class RequestForm(form):
            def __init__(self, *args, **inner):
                super().__init__(*args, request=request, **inner)

        return RequestForm

    @admin.display(description="Your organisation's sign-in link")
    def signin_link(self, obj: Tenant) -> str:
        if obj.pk is None:
            return "—"
        url = settings.PORTAL_BASE_URL + reverse("signin-organisation", args=[obj.signin_key])
        return format_html("<code>{}</code>", url)

    def save_model(self, request, obj: Tenant, form, change):
        super().save_model(request, obj, form, change)
        changed = [name for name in SIGN_IN_FIELDS if name in form.changed_data]
        if change and changed:
            audit.record(
                AuditEvent.Kind.SIGN_IN_SETTINGS,
                "Sign-in settings changed: "
                + ", ".join(
                    f"{Tenant._meta.get_field(n).verbose_name} → {getattr(obj, n)}" for n in changed
                )
                + ".",
                tenant=obj,
                actor=request.user,
            )


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
        ("Sign in with Microsoft", {"fields": ["microsoft_accounts"]}),
        (
            "Password",
            {
                "fields": ["password1", "password2"],
                "description": "Set it for a new member; leave empty to keep it.",
            },
        ),
    ]

    readonly_fields = ["microsoft_accounts"]

    @admin.display(description="Microsoft accounts")
    def microsoft_accounts(self, obj: Member) -> str:
        accounts = list(obj.microsoft_identities.all()) if obj.pk else []
        if not accounts:
            return "None: signs in with a password only."
        return format_html_join(
            ", ",
            "{} (directory <code>{}</code>)",
            ((a.username or a.ms_object_id, a.ms_tenant_id) for a in accounts),
        )

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
