"""Raising events for a tenant's webhook endpoints: the transactional outbox.

`emit` writes the event and one delivery per endpoint that wants it, in the caller's transaction:
a change that rolls back raises nothing, one that commits always has its deliveries, which the
delivery worker sends (connections.webhooks; its sweep finds them again if the hand-over to the
queue was lost). Payloads carry ids a receiver needs, never a token or a secret.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from connections import webhooks
from connections.models import (
    EventType,
    Tenant,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)


def new_id() -> str:
    """A webhook-id: unique, the same for every attempt of a delivery (receivers dedupe on it)."""
    return "msg_" + secrets.token_urlsafe(18)


def emit(
    event_type: str,
    tenant: Tenant | int,
    data: dict[str, Any],
    inline: Callable[[], dict[str, Any]] | None = None,
) -> WebhookEvent | None:
    """Raise an event of `tenant`; None when no enabled endpoint wants it (nothing is stored).
    `inline` adds to the data of endpoints that take records inline (`include_records`): it is
    called only if one does, and they get an event of their own with it."""
    tenant_id = tenant if isinstance(tenant, int) else tenant.pk
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(tenant_id=tenant_id, enabled=True).only(
            "pk", "event_types", "include_records"
        )
        if endpoint.wants(event_type)
    ]
    plain = [e for e in endpoints if inline is None or not e.include_records]
    rich = [e for e in endpoints if e not in plain]
    stored = None
    if rich:
        stored = _store(event_type, tenant_id, {**data, **inline()}, rich)
    if plain:
        stored = _store(event_type, tenant_id, data, plain)
    return stored


def send_test(endpoint: WebhookEndpoint) -> WebhookEvent:
    """A webhook.test event to this endpoint alone (the admin's "send test event")."""
    data = {"endpoint": endpoint.pk, "message": "A test event from Graphport's admin."}
    return _store(EventType.TEST, endpoint.tenant_id, data, [endpoint])


def _store(
    event_type: str, tenant_id: int, data: dict[str, Any], endpoints: list[WebhookEndpoint]
) -> WebhookEvent:
    now = timezone.now()
    public_id = new_id()
    payload = {
        "id": public_id,
        "type": str(event_type),
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "tenant": tenant_id,
        "data": data,
    }
    # Without a savepoint: an error here rolls back the caller's change as well, as it must.
    with transaction.atomic(savepoint=False):
        event = WebhookEvent.objects.create(
            public_id=public_id,
            tenant_id=tenant_id,
            type=event_type,
            payload=payload,
            created_at=now,
        )
        WebhookDelivery.objects.bulk_create(
            WebhookDelivery(
                event=event,
                endpoint=endpoint,
                tenant_id=tenant_id,
                next_attempt_at=now,
                created_at=now,
            )
            for endpoint in endpoints
        )
        for endpoint in endpoints:
            webhooks.wake(endpoint.pk)
    return event
