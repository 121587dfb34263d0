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
        SyncJob.objects.filter(pk__in=[j.pk for j in jobs]).update(next_run_at=now)
    return jobs


def stop_jobs(connection: Connection, reason: str) -> int:
    return SyncJob.objects.filter(connection=connection, enabled=True).update(
        enabled=False, state=SyncJob.State.DISABLED, disabled_reason=reason
    )


def run_now(job: SyncJob, trigger: str = "manual") -> None:
    """Enqueue a run at once (after the current transaction commits)."""
    from graphsync.tasks import run_job

    SyncJob.objects.filter(pk=job.pk).update(next_run_at=timezone.now())
    transaction.on_commit(lambda: run_job.delay(job.pk, trigger))


def reset_to_full_resync(job: SyncJob) -> None:
    """Forget the delta cursor: the next run reads everything again, and marks what Graph no
    longer returns as deleted."""
    SyncJob.objects.filter(pk=job.pk).update(cursor="", cursor_is_delta=False)
    run_now(job, "resync")


def enable(job: SyncJob) -> None:
    SyncJob.objects.filter(pk=job.pk).update(
        enabled=True,
        state=SyncJob.State.IDLE,
        disabled_reason="",
        failure_streak=0,
        next_run_at=timezone.now(),
    )


def disable(job: SyncJob, reason: str) -> None:
    SyncJob.objects.filter(pk=job.pk).update(
        enabled=False, state=SyncJob.State.DISABLED, disabled_reason=reason
    )
