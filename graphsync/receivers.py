"""Reactions to connection events: a new connection syncs at once and subscribes to changes;
a disconnected one stops, and its subscriptions are deleted while its token still works."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from graphsync import jobs, subscriptions
from graphsync.models import SyncRun

logger = logging.getLogger(__name__)


def start_syncing(sender, connection, **kwargs) -> None:
    from graphsync.tasks import maintain_subscription, run_job

    ensured = jobs.ensure_jobs(connection)
    if not settings.GRAPHSYNC_START_ON_CONNECT:
        return
    watched = [job.pk for job in ensured if subscriptions.target(job) is not None]
    if not subscriptions.can_receive():
        watched = []

    def enqueue() -> None:
        for job in ensured:
            run_job.delay(job.pk, SyncRun.Trigger.FIRST)
        for pk in watched:  # beat would create them within 15 minutes; this is sooner
            maintain_subscription.delay(pk)

    # After commit: the worker must see the jobs the request just created.
    transaction.on_commit(enqueue)


def drop_subscriptions(sender, connection, **kwargs) -> None:
    try:
        subscriptions.delete_for_connection(connection)
    except Exception:
        # The member's disconnect must go through: a subscription left behind lapses at
        # Microsoft, and its notifications are dropped as unknown until then.
        logger.exception("connection %s: subscriptions not deleted", connection.pk)


def stop_syncing(sender, connection, **kwargs) -> None:
    jobs.stop_jobs(connection, "The connection was disconnected.")
