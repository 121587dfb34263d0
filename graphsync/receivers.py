"""Reactions to connection events: a new connection syncs at once and subscribes to changes;
a disconnected one stops, and its subscriptions are deleted while its token still works; a
reconnected one picks up again where it stopped."""

from __future__ import annotations

import logging

from django.conf import settings

from graphsync import jobs, scheduling, subscriptions
from graphsync.models import SyncJob

logger = logging.getLogger(__name__)


def start_syncing(sender, connection, **kwargs) -> None:
    ensured = jobs.ensure_jobs(connection)
    if not settings.GRAPHSYNC_START_ON_CONNECT:
        return
    watched = [job.pk for job in ensured if subscriptions.target(job) is not None]
    if not subscriptions.can_receive():
        watched = []
    try:
        scheduling.first_runs(ensured, watched)
    except Exception:
        # The broker is down or unusable. The connection is stored and its jobs are due now:
        # beat dispatches them, and creates the subscriptions, once it can. The member's
        # connect must not end on an error page for that.
        logger.exception(
            "connection %s: first runs not enqueued, beat will start them", connection.pk
        )


def drop_subscriptions(sender, connection, **kwargs) -> None:
    try:
        subscriptions.delete_for_connection(connection)
    except Exception:
        # The member's disconnect must go through: a subscription left behind lapses at
        # Microsoft, and its notifications are dropped as unknown until then.
        logger.exception("connection %s: subscriptions not deleted", connection.pk)


def stop_syncing(sender, connection, **kwargs) -> None:
    SyncJob.objects.filter(connection=connection, enabled=True).disable(jobs.DISCONNECTED)
