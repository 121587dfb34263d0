"""The audit trail: one line for anything that changes an app or a connection."""

from __future__ import annotations

from typing import Any

from connections.models import AuditEvent, Connection, EntraApp, Tenant


def record(
    kind: str,
    message: str,
    *,
    tenant: Tenant | None = None,
    app: EntraApp | None = None,
    connection: Connection | None = None,
    actor=None,
    **data: Any,
) -> AuditEvent:
    if connection is not None:
        app = app or connection.app
    if app is not None:
        tenant = tenant or app.tenant
    if tenant is None:
        raise ValueError("an audit event belongs to a tenant")
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    return AuditEvent.objects.create(
        tenant=tenant,
        app=app,
        connection=connection,
        actor=actor,
        kind=kind,
        message=message,
        data=data,
    )
