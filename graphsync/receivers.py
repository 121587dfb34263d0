"""Reactions to connection events: a new connection syncs at once; a disconnected one stops."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from graphsync import jobs
from graphsync.models import SyncRun


def start_syncing(sender, connection, **kwargs) -> None:
    from graphsync.tasks import run_job

    ensured = jobs.ensure_jobs(connection)
    if not settings.GRAPHSYNC_START_ON_CONNECT:
        return
    # After commit: the worker must see the jobs the request just created.
    transaction.on_commit(lambda: [run_job.delay(job.pk, SyncRun.Trigger.FIRST) for job in ensured])


def stop_syncing(sender, connection, **kwargs) -> None:
    jobs.stop_jobs(connection, "The connection was disconnected.")
