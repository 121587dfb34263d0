"""Which sync jobs a connection gets, from the permissions it was granted."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from connections.models import Connection
from graphsync import resources
from graphsync.models import Resource, SyncJob


def wanted(connection: Connection) -> list[tuple[str, str]]:
    """(resource, folder) pairs the connection's grant allows."""
    if connection.kind == Connection.Kind.APPLICATION:
        return [(Resource.USERS, ""), (Resource.GROUPS, "")]
    granted = {s.lower().rsplit("/", 1)[-1] for s in connection.granted_scopes.split()}
    pairs = []
    for spec in resources.SPECS.values():
        if spec.app_only or not granted.intersection(spec.delegated_scopes):
            continue
        if spec.resource == Resource.MAIL:
            pairs += [(Resource.MAIL, folder) for folder in resources.mail_folders()]
        else:
            pairs.append((spec.resource, ""))
    return pairs


def ensure_jobs(connection: Connection) -> list[SyncJob]:
    """Create the missing jobs (existing ones keep their settings and cursors) and make every
    enabled job of the connection due now."""
    now = timezone.now()
    with transaction.atomic():
        for resource, folder in wanted(connection):
            SyncJob.objects.get_or_create(
                connection=connection,
                resource=resource,
                folder=folder,
                defaults={"tenant_id": connection.app.tenant_id, "next_run_at": now},
            )
        jobs = list(SyncJob.objects.filter(connection=connection, enabled=True))
        SyncJob.objects.filter(pk__in=[j.pk for j in jobs]).make_due(now)
    return jobs
