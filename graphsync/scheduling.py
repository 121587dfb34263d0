"""When a job runs, and how a run is asked for: every scheduling decision in one place.

The engine runs jobs, subscriptions keep Graph telling us about changes, notifications arrive
from Microsoft: each of them decides *that* a job should run again, and this module decides
*when*, and enqueues it. Runs are enqueued by task name (core.queue), so nothing here, nor
anything that calls it, imports the Celery tasks that call the engine.

Notification runs are coalesced: a Redis key per job, set with NX, means "a notification run is
queued". Only the request that sets it enqueues a run, a short delay later, so a burst of
notifications becomes one run. The run that ends deletes the key, then asks whether a
notification arrived after it started: such a change may have come after its delta request, so
one more run follows (`settle`). The key carries a TTL only so that a lost task cannot silence a
job for long.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from core import keys, queue, redis_client
from graphsync.models import Subscription, SyncJob, SyncRun

RUN_JOB = "graphsync.tasks.run_job"
MAINTAIN_SUBSCRIPTION = "graphsync.tasks.maintain_subscription"
HANDLE_LIFECYCLE = "graphsync.tasks.handle_lifecycle"

PENDING_TTL_SECONDS = 15 * 60


@dataclass
class Outcome:
    """How one attempt to run a job ended, and what the scheduler should do next."""

    run: SyncRun | None
    retry_in: float | None = None  # deferred: run again after this many seconds
    skipped: str = ""  # why nothing ran (the job is leased or disabled)
    lease_left: float | None = None  # when skipped for a lease: seconds until it runs out


def poll_interval(job: SyncJob) -> int:
    """Seconds until the job's next scheduled run: relaxed to the safety poll while an active
    subscription reports its changes."""
    watched = Subscription.objects.filter(
        job_id=job.pk, status=Subscription.Status.ACTIVE, expires_at__gt=timezone.now()
    ).exists()
    if watched:
        return max(job.interval_seconds, settings.GRAPH_SAFETY_POLL_SECONDS)
    return job.interval_seconds


def poll_again(job_id: int) -> None:
    """Without a subscription the job is back on its own interval, not the safety poll."""
    job = SyncJob.objects.filter(pk=job_id).only("interval_seconds").first()
    if job is None:
        return
    soon = timezone.now() + timedelta(seconds=job.interval_seconds)
    SyncJob.objects.filter(pk=job_id, next_run_at__gt=soon).make_due(soon)


def run_now(job: SyncJob, trigger: str = SyncRun.Trigger.MANUAL) -> None:
    """Enqueue a run at once (after the current transaction commits)."""
    SyncJob.objects.filter(pk=job.pk).make_due()
    queue.enqueue(RUN_JOB, job.pk, trigger)


def full_resync(job: SyncJob) -> None:
    """Forget the delta cursor: the next run reads everything again, and marks what Graph no
    longer returns as deleted."""
    job.forget_cursor()
    run_now(job, SyncRun.Trigger.RESYNC)


def first_runs(jobs: list[SyncJob], watched: list[int]) -> None:
    """A new connection's first runs, and its subscriptions (beat would create them within 15
    minutes; this is sooner), after the request's transaction commits."""
    for job in jobs:
        queue.enqueue(RUN_JOB, job.pk, SyncRun.Trigger.FIRST)
    for job_id in watched:
        queue.enqueue(MAINTAIN_SUBSCRIPTION, job_id)


def handle_lifecycle(graph_id: str, event: str) -> None:
    """A lifecycle event that needs Graph calls: a worker takes it, not the webhook."""
    queue.enqueue(HANDLE_LIFECYCLE, graph_id, event)


def request_run(job_id: int) -> bool:
    """Queue one notification run of the job unless one is queued already. True if queued."""
    key = keys.notified(job_id)
    if not redis_client.shared().set(key, "1", nx=True, ex=PENDING_TTL_SECONDS):
        return False
    try:
        queue.send(
            RUN_JOB,
            job_id,
            SyncRun.Trigger.NOTIFICATION,
            countdown=settings.GRAPH_NOTIFICATION_DELAY_SECONDS,
        )
    except Exception:
        # or every later notification would wait for a run never queued
        redis_client.shared().delete(key)
        raise
    return True


def settle(job_id: int, outcome: Outcome) -> bool:
    """After a run of the job (whatever its trigger): let the next notification queue a run,
    and queue one now if a notification arrived while this run was under way. Returns True
    when it queued one."""
    if outcome.run is None:
        if outcome.lease_left is None:  # disabled or gone: nothing will run
            redis_client.shared().delete(keys.notified(job_id))
        # Leased: the run holding the job settles when it ends, and sees our notification.
        return False
    if outcome.retry_in is not None:
        return False  # throttled: the retry carries the round on and settles then
    redis_client.shared().delete(keys.notified(job_id))
    if outcome.run.outcome != SyncRun.Outcome.SUCCEEDED:
        return False  # a failing job retries on its backoff, not on every notification
    # Same-clock caveat: web and worker clocks are compared; NTP keeps them within
    # milliseconds, and a late change is also caught by the next notification or safety poll.
    arrived = Subscription.objects.filter(
        job_id=job_id, last_notification_at__gt=outcome.run.started_at
    ).exists()
    return arrived and request_run(job_id)
