"""Invitations and Microsoft sign-ins in the admin: invite by e-mail, resend, revoke; see who
signs in with which Microsoft account."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.mail import BadHeaderError

from connections import invitations
from connections.models import Invitation, MicrosoftIdentity
from connections.tenancy import (
    ReadOnlyAdmin,
    TenantFilterForOperators,
    TenantScopedAdmin,
    admin_tenant,
)
from core.formatting import badge

STATUS_TONES = {
    Invitation.Status.PENDING: "warn",
    Invitation.Status.ACCEPTED: "ok",
    Invitation.Status.EXPIRED: "none",
    Invitation.Status.REVOKED: "bad",
}


class InvitationForm(forms.ModelForm):
    class Meta:
        model = Invitation
        fields = ["tenant", "email", "role"]

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request

    def clean(self):
        cleaned = super().clean()
        tenant = cleaned.get("tenant")
        if self.request is not None and not self.request.user.is_superuser:
            tenant = admin_tenant(self.request.user)
        email = cleaned.get("email")
        if tenant is not None and email:
            problem = invitations.refusal(tenant, email)
            if problem:
                self.add_error("email", problem)
        cleaned["tenant"] = tenant
        return cleaned


@admin.register(Invitation)
class InvitationAdmin(TenantFilterForOperators, TenantScopedAdmin):
    form = InvitationForm
    list_display = [
        "email",
        "tenant",
        "role",
        "status_badge",
        "invited_by",
        "sent_at",
        "times_sent",
        "expires_at",
        "accepted_by",
    ]
    list_filter = ["role"]
    list_select_related = ["tenant", "invited_by", "accepted_by"]
    search_fields = ["email"]
    actions = ["resend", "revoke"]
    # Revoked, never deleted, and never edited: an invitation is what was sent.
    tenant_admin_can_change = tenant_admin_can_delete = False
    readonly_fields = [
        "tenant",
        "email",
        "role",
        "status_badge",
        "invited_by",
        "created_at",
        "sent_at",
        "times_sent",
        "expires_at",
        "accepted_at",
        "accepted_by",
        "revoked_at",
    ]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["tenant", "email", "role"] if request.user.is_superuser else ["email", "role"]
        return self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)

        class RequestForm(form):
            def __init__(self, *args, **inner):
                super().__init__(*args, request=request, **inner)

        return RequestForm

    @admin.display(description="Status")
    def status_badge(self, obj: Invitation) -> str:
        return badge(obj.get_status_display(), STATUS_TONES[obj.status])

    def save_model(self, request, obj: Invitation, form, change):
        tenant = form.cleaned_data["tenant"]
        try:
            made = invitations.invite(tenant, obj.email, obj.role, request.user)
        except (OSError, BadHeaderError) as exc:  # the row is kept: resend once mail works
            made = Invitation.objects.filter(tenant=tenant, email=obj.email).first()
            self.message_user(
                request, f"The invitation was saved but not sent: {exc}", messages.ERROR
            )
        obj.pk, obj.tenant = made.pk, made.tenant  # for the admin's log and redirect

    @admin.action(description="Send the selected invitations again (new link)")
    def resend(self, request, queryset):
        sent, skipped = 0, []
        for invitation in queryset.select_related("tenant"):
            try:
                invitations.resend(invitation, request.user)
                sent += 1
            except ValueError as exc:
                skipped.append(str(exc))
        if sent:
            self.message_user(request, f"Sent {sent} invitation(s) again.", messages.SUCCESS)
        for reason in skipped:
            self.message_user(request, reason, messages.WARNING)

    @admin.action(description="Revoke the selected invitations")
    def revoke(self, request, queryset):
        revoked = sum(
            invitations.revoke(i, request.user) for i in queryset.select_related("tenant")
        )
        self.message_user(request, f"Revoked {revoked} invitation(s).", messages.SUCCESS)


@admin.register(MicrosoftIdentity)
class MicrosoftIdentityAdmin(ReadOnlyAdmin):
    """Which Microsoft account signs in as which login. Removing one (operators only) stops it
    signing in; the login itself stays."""

    tenant_lookup = "user__membership__tenant"
    list_display = ["username", "user", "ms_tenant_id", "ms_object_id", "last_sign_in_at"]
    list_select_related = ["user"]
    search_fields = ["username", "=ms_object_id", "=ms_tenant_id", "user__username"]

    def get_list_filter(self, request):
        return []

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser
