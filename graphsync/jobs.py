"""Which sync jobs a connection gets, from the permissions it was granted, and what becomes of
them when the connection goes and comes back."""

from __future__ import annotations

import re
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from connections.models import Connection
from graphsync import resources
from graphsync.models import Resource, SyncJob

# Why a disconnect stops a job. Reconnecting brings back the jobs stopped with it, and only
# them: a job an administrator disabled, or one Graph refused (no mailbox, a missing
# permission), keeps its own reason and stays disabled.
DISCONNECTED = "The connection was disconnected."
# A contacts delta link of the folder-less form, which Graph does not document (docs/microsoft.md,
# "Delta and resync"): jobs synced with it before contacts went per folder.
FOLDERLESS_CONTACTS_DELTA = re.compile(r"/me/contacts/delta\b", re.IGNORECASE)


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
            # Contacts: the default folder, found by id when the job first runs.
            pairs.append((spec.resource, ""))
    return pairs


def ensure_jobs(connection: Connection) -> list[SyncJob]:
    """Create the missing jobs (existing ones keep their settings, cursors and records), bring
    back those the last disconnect stopped if the grant still allows them, and make every
    enabled job of the connection due now."""
    now = timezone.now()
    pairs = wanted(connection)
    with transaction.atomic():
        for resource, folder in pairs:
            SyncJob.objects.get_or_create(
                connection=connection,
                resource=resource,
                folder=folder,
                defaults={"tenant_id": connection.app.tenant_id, "next_run_at": now},
            )
        allowed = {resource for resource, _ in pairs}
        stopped = SyncJob.objects.filter(
            connection=connection, enabled=False, disabled_reason=DISCONNECTED
        )
        for job in stopped:
            if job.resource in allowed:
                job.enable()
        _restart_folderless_contacts(connection, now)
        jobs = list(SyncJob.objects.filter(connection=connection, enabled=True))
        SyncJob.objects.filter(pk__in=[j.pk for j in jobs]).make_due(now)
    return jobs


def _restart_folderless_contacts(connection: Connection, now: datetime) -> None:
    """A contacts job still on a folder-less delta link starts a new round on its folder's
    delta: records keep their Graph ids, and the round's end marks what is gone. A job a worker
    holds is left to it (the next reconnect, or a full resync in the admin, restarts it)."""
    jobs = SyncJob.objects.filter(connection=connection, resource=Resource.CONTACTS).filter(
        Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    )
    for job in jobs.exclude(cursor=""):
        if FOLDERLESS_CONTACTS_DELTA.search(job.cursor):
            job.forget_cursor()
