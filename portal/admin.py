"""The admin site of Graphport: Django's, with the operator dashboard on its index.

Why a subclass made the default site (`PortalAdminConfig.default_site`, Django's documented way
to replace `admin.site`): `AdminSite.index()` is the one place that has the request and hands
extra context to the index template, so the dashboard's queries run once in the view, where
query counts are measured, and `templates/admin/index.html` only lays the figures out. Patching
`admin.site.index` at start-up or querying from a template tag would hide the same thing in a
less obvious place. Every `admin.register()` and `admin.site` keep working unchanged.

Its login shares the portal's budgets of failed sign-ins (portal.login), and answers 429 as the
portal's does: AdminSite.login builds Django's LoginView itself, so the status is set on what it
returns.
"""

from __future__ import annotations

from django.contrib import admin
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.models import WebAuthnCredential

from portal import charts, dashboard
from portal.login import AdminLoginForm, answer_429_when_refused


class GraphportAdminSite(admin.AdminSite):
    login_form = AdminLoginForm

    def login(self, request, extra_context=None):
        return answer_429_when_refused(super().login(request, extra_context))

    def index(self, request, extra_context=None):
        board = dashboard.for_user(request.user)
        context = {"dashboard": board}
        if board is not None:
            context["dashboard_charts"] = [
                (
                    "Items synced",
                    f"{sum(board.synced):,}",
                    charts.hourly_bar_chart(
                        board.hours, board.synced, title="Items synced per hour", unit="items"
                    ),
                ),
                (
                    "Throttled responses",
                    f"{sum(board.throttled):,}",
                    charts.hourly_bar_chart(
                        board.hours,
                        board.throttled,
                        title="Throttled responses per hour",
                        unit="responses",
                    ),
                ),
            ]
        return super().index(request, {**context, **(extra_context or {})})


class SecondFactorAdmin(admin.ModelAdmin):
    """Second factors, for operators to help someone who lost theirs: which exist and when they
    were used, and deleting them. Never their keys or codes (django-otp's own admins show the
    key and the QR code that copies an authenticator app)."""

    list_display = ["user", "name", "confirmed", "created_at", "last_used_at"]
    list_select_related = ["user"]
    search_fields = ["user__username", "name"]
    fields = list_display
    readonly_fields = list_display

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


def register_second_factors(site: admin.AdminSite) -> None:
    """In place of django-otp's own admins (PortalConfig.ready: after the admin's autodiscovery,
    which registers those)."""
    for model in (TOTPDevice, StaticDevice, WebAuthnCredential):
        if site.is_registered(model):
            site.unregister(model)
        site.register(model, SecondFactorAdmin)
