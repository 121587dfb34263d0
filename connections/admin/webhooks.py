"""Outgoing webhooks in the admin: endpoints (their signing secret shown once, when made or
rotated; a test event; replays), and the deliveries and events behind them, read-only."""

from __future__ import annotations

import json
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from connections import events, webhooks
from connections.models import (
    DeliveryAttempt,
    EventType,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from connections.models.webhooks import new_secret
from connections.tenancy import (
    ReadOnlyAdmin,
    TenantFilterForOperators,
    TenantScopedAdmin,
    TenantScopedInline,
    admin_tenant,
)
from core.formatting import badge, short

STATE_TONES = {
    WebhookDelivery.State.DELIVERED: "ok",
    WebhookDelivery.State.PENDING: "warn",
    WebhookDelivery.State.FAILED: "bad",
}
#: an endpoint's columns a save from its page writes; the rest belong to the delivery workers
EDITABLE = ["tenant", "url", "description", "event_types", "enabled", "include_records"]
ENDPOINT_SECRETS = ("endpoint__secret", "endpoint__previous_secret")


def _pretty(payload) -> str:
    return format_html(
        '<pre style="white-space:pre-wrap;margin:0">{}</pre>', json.dumps(payload, indent=2)
    )


def _deliveries_url(**filters) -> str:
    query = "&".join(f"{name}={value}" for name, value in filters.items())
    return f"{reverse('admin:connections_webhookdelivery_changelist')}?{query}"


# --- endpoints -------------------------------------------------------------------------------


class WebhookEndpointForm(forms.ModelForm):
    # A URL typed without a scheme means https.
    url = forms.URLField(label="URL", max_length=2000, assume_scheme="https")
    event_types = forms.MultipleChoiceField(
        choices=EventType.subscribable,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None selected: every event type, also those Graphport adds later.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = EDITABLE

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        problem = webhooks.url_problem(url)
        if problem:
            raise forms.ValidationError(problem)
        return url


class ReplaySinceForm(forms.Form):
    since = forms.DateTimeField(
        label="Replay the failed deliveries of events raised since (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(TenantFilterForOperators, TenantScopedAdmin):
    form = WebhookEndpointForm
    list_display = ["endpoint", "tenant", "state", "types", "created_at"]
    list_filter = ["enabled"]
    list_select_related = ["tenant"]
    search_fields = ["url", "description"]
    actions = ["send_test_event", "rotate_secret", "replay_failed_since"]
    readonly_fields = ["state", "failing_since", "signing_secret", "deliveries", "created_at"]

    def get_fields(self, request, obj=None):
        return EDITABLE if obj is None else [*EDITABLE, *self.readonly_fields]

    @admin.display(description="Endpoint", ordering="url")
    def endpoint(self, obj: WebhookEndpoint) -> str:
        if obj.description:
            return format_html("{}<br><code>{}</code>", obj.description, obj.url)
        return format_html("<code>{}</code>", obj.url)

    @admin.display(description="State")
    def state(self, obj: WebhookEndpoint) -> str:
        if not obj.enabled:
            if obj.disabled_reason:
                return format_html("{} {}", badge("disabled", "bad"), obj.disabled_reason)
            return badge("disabled", "none")
        if obj.failing_since:
            return badge(f"failing since {obj.failing_since:%Y-%m-%d %H:%M}", "warn")
        return badge("enabled", "ok")

    @admin.display(description="Event types")
    def types(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.event_types) or "all"

    @admin.display(description="Signing secret")
    def signing_secret(self, obj: WebhookEndpoint) -> str:
        text = (
            "Shown once, when the endpoint was created or its secret rotated; Graphport keeps "
            "it encrypted and never shows it again. For a new one, use the action “Rotate the "
            "signing secret” on the list."
        )
        until = obj.previous_secret_until
        if until and until > timezone.now():
            return f"{text} The previous secret also signs until {until:%Y-%m-%d %H:%M} UTC."
        return text

    @admin.display(description="Deliveries")
    def deliveries(self, obj: WebhookEndpoint) -> str:
        return format_html(
            '<a href="{}">all</a> · <a href="{}">failed</a> · <a href="{}">pending</a>',
            _deliveries_url(endpoint=obj.pk),
            _deliveries_url(endpoint=obj.pk, state__exact=WebhookDelivery.State.FAILED),
            _deliveries_url(endpoint=obj.pk, state__exact=WebhookDelivery.State.PENDING),
        )

    def save_model(self, request, obj: WebhookEndpoint, form, change):
        if not request.user.is_superuser:
            obj.tenant = admin_tenant(request.user)
        if change:
            # Only what the form edits: the lease, the failing spell and the reason are the
            # delivery workers', who may have written them since this page was loaded.
            obj.save(update_fields=EDITABLE)
            if "enabled" in form.changed_data and obj.enabled:
                obj.enable()
                webhooks.wake(obj.pk)  # what waited while it was disabled goes out now
            return
        raw = new_secret()
        obj.secret = raw
        super().save_model(request, obj, form, change)
        request._graphport_new_secrets = [(obj, raw)]  # shown once, by response_add

    def response_add(self, request, obj, post_url_continue=None):
        shown = getattr(request, "_graphport_new_secrets", None)
        if shown is None:
            return super().response_add(request, obj, post_url_continue)
        return self._secrets_page(request, "Webhook endpoint created", shown)

    def _secrets_page(self, request, title: str, shown: list) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "shown": shown,
            "opts": self.model._meta,
        }
        response = TemplateResponse(
            request, "admin/connections/webhookendpoint/secret.html", context
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Send a test event", permissions=["change"])
    def send_test_event(self, request, queryset):
        enabled = [endpoint for endpoint in queryset if endpoint.enabled]
        for endpoint in enabled:
            events.send_test(endpoint)
        sent = f"A webhook.test event is on its way to {len(enabled)} endpoint(s)."
        self.message_user(request, sent, messages.SUCCESS)
        if len(enabled) < len(queryset):
            self.message_user(
                request, "Disabled endpoints were left out: enable them first.", messages.WARNING
            )

    @admin.action(
        description="Rotate the signing secret (the old one signs too for 24 hours)",
        permissions=["change"],
    )
    def rotate_secret(self, request, queryset):
        rotated = [(endpoint, endpoint.rotate_secret()) for endpoint in queryset]
        return self._secrets_page(request, "Signing secret rotated", rotated)

    @admin.action(description="Replay failed deliveries since…", permissions=["change"])
    def replay_failed_since(self, request, queryset):
        form = ReplaySinceForm(
            request.POST if "apply" in request.POST else None,
            initial={"since": timezone.now() - timedelta(days=1)},
        )
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "title": "Replay failed deliveries",
                "endpoints": queryset,
                "form": form,
                "opts": self.model._meta,
                "action": "replay_failed_since",
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
                "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
                "select_across": request.POST.get("select_across", "0"),
            }
            return TemplateResponse(
                request, "admin/connections/webhookendpoint/replay.html", context
            )
        since = form.cleaned_data["since"]
        replayed = sum(webhooks.replay_failed_since(e, since) for e in queryset if e.enabled)
        self.message_user(
            request,
            f"{replayed} failed delivery(ies) since {since:%Y-%m-%d %H:%M} UTC will be sent again.",
            messages.SUCCESS,
        )
        if any(not endpoint.enabled for endpoint in queryset):
            self.message_user(
                request, "Disabled endpoints were left out: enable them first.", messages.WARNING
            )
        return None


# --- deliveries ------------------------------------------------------------------------------


class EndpointFilter(admin.SimpleListFilter):
    """The endpoints of the viewer's tenant (every tenant's for an operator), by name."""

    title = "endpoint"
    parameter_name = "endpoint"

    def lookups(self, request, model_admin):
        endpoints = WebhookEndpoint.objects.only("pk", "url", "description")
        if not request.user.is_superuser:
            tenant = admin_tenant(request.user)
            endpoints = endpoints.filter(tenant=tenant) if tenant else endpoints.none()
        return [(str(endpoint.pk), str(endpoint)) for endpoint in endpoints]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(endpoint_id=int(value)) if value and value.isdigit() else queryset


class ReadOnlyInline(TenantScopedInline, admin.TabularInline):
    extra = 0
    max_num = 0
    can_delete = False
    tenant_admin_can_add = tenant_admin_can_change = tenant_admin_can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class AttemptInline(ReadOnlyInline):
    model = DeliveryAttempt
    fields = ["started_at", "duration_ms", "status_code", "error", "response_excerpt"]
    readonly_fields = fields


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "event_type",
        "webhook_id",
        "endpoint",
        "state_badge",
        "attempts",
        "last_status",
        "next_attempt_at",
        "delivered_at",
        "short_error",
    ]
    list_filter = ["state", EndpointFilter, "event__type", "created_at"]
    list_select_related = ["event", "endpoint"]
    search_fields = ["=event__public_id"]
    actions = ["replay"]
    inlines = [AttemptInline]
    fields = [
        "event",
        "webhook_id",
        "endpoint",
        "state",
        "attempts",
        "next_attempt_at",
        "leased_until",
        "last_status",
        "last_error",
        "delivered_at",
        "created_at",
        "payload",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        # Joined here for the page too, so that the endpoint comes without its secrets; a
        # sync.completed payload can carry records, which the list never needs.
        queryset = super().get_queryset(request).select_related("event", "endpoint")
        return queryset.defer("event__payload", *ENDPOINT_SECRETS)

    @admin.display(description="Type", ordering="event__type")
    def event_type(self, obj: WebhookDelivery) -> str:
        return obj.event.type

    @admin.display(description="webhook-id")
    def webhook_id(self, obj: WebhookDelivery) -> str:
        return format_html("<code>{}</code>", obj.event.public_id)

    @admin.display(description="State", ordering="state")
    def state_badge(self, obj: WebhookDelivery) -> str:
        return badge(obj.get_state_display(), STATE_TONES[obj.state])

    @admin.display(description="Last error")
    def short_error(self, obj: WebhookDelivery) -> str:
        return short(obj.last_error)

    @admin.display(description="Payload (the request's body)")
    def payload(self, obj: WebhookDelivery) -> str:
        return _pretty(obj.event.payload)

    @admin.action(description="Replay the selected deliveries (same event, same webhook-id)")
    def replay(self, request, queryset):
        replayed = webhooks.replay(queryset)
        self.message_user(
            request, f"{replayed} delivery(ies) will be sent again.", messages.SUCCESS
        )
        skipped = queryset.count() - replayed
        if skipped:
            self.message_user(
                request,
                f"{skipped} left out: their endpoint is disabled, or they are being sent now.",
                messages.WARNING,
            )


# --- events ------------------------------------------------------------------------------------


class DeliveryInline(ReadOnlyInline):
    model = WebhookDelivery
    fields = ["endpoint", "state", "attempts", "last_status", "delivered_at", "last_error"]
    readonly_fields = fields
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("endpoint").defer(*ENDPOINT_SECRETS)


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "type", "public_id", "tenant"]
    list_filter = ["type", "created_at"]
    list_select_related = ["tenant"]
    search_fields = ["=public_id"]
    inlines = [DeliveryInline]
    fields = ["public_id", "type", "tenant", "created_at", "payload_shown"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).defer("payload")

    @admin.display(description="Payload")
    def payload_shown(self, obj: WebhookEvent) -> str:
        return _pretty(obj.payload)
