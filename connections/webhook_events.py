"""What each connection and app event tells a tenant's backend (connections.events sends it).

Small documented objects: the ids a receiver needs to look things up through the API, and a
reason in words where there is one; never a token, a secret or a credential's value.
"""

from __future__ import annotations

from typing import Any

from connections import events
from connections.models import AppCertificate, ClientSecret, Connection, EntraApp, EventType


def connection_data(connection: Connection, **extra: Any) -> dict[str, Any]:
    return {
        "connection": connection.pk,
        "app": connection.app_id,
        "kind": connection.kind,
        "status": connection.status,
        "end_user_id": connection.end_user_id or None,
        "ms_tenant_id": connection.ms_tenant_id,
        "ms_object_id": connection.ms_object_id or None,
        **extra,
    }


def connection_event(event_type: str, connection: Connection, **extra: Any) -> None:
    """Raise `event_type` for the connection, in the caller's transaction."""
    events.emit(event_type, connection.app.tenant_id, connection_data(connection, **extra))


def connection_stored(connection: Connection, created: bool) -> None:
    kind = EventType.CONNECTION_CREATED if created else EventType.CONNECTION_RECONNECTED
    connection_event(kind, connection)


def credentials_broken(app: EntraApp, reason: str) -> None:
    data = {"app": app.pk, "client_id": app.client_id, "reason": reason}
    events.emit(EventType.APP_CREDENTIALS_BROKEN, app.tenant_id, data)


def credential_expiring(credential: ClientSecret | AppCertificate, days_left: int) -> None:
    app = credential.app
    data = {
        "app": app.pk,
        "client_id": app.client_id,
        "credential": credential.noun,
        "credential_id": credential.pk,
        "label": credential.short_label,  # as the Azure portal shows it: never the value
        "expires_on": credential.expires_on.isoformat(),
        "days_left": days_left,
    }
    events.emit(EventType.APP_CREDENTIALS_EXPIRING, app.tenant_id, data)
