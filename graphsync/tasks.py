"""Celery tasks of the sync queue: thin, the work is in graphsync.engine and .dispatch."""

from __future__ import annotations

from celery import shared_task

from graphsync import dispatch, engine, orgsync, scheduling, subscriptions
from graphsync.models import SyncRun


@shared_task
def dispatch_due_syncs() -> int:
    rows, left = dispatch.take()
    dispatch.note_backlog(left)
    first_loads = {pk for pk, _, incremental in rows if not incremental}
    for group in dispatch.plan(rows):
        if len(group) > 1:
            run_jobs_batched.delay(group, SyncRun.Trigger.SCHEDULE)
        elif group[0] in first_loads:
            run_job.apply_async((group[0], SyncRun.Trigger.SCHEDULE), queue=dispatch.BULK_QUEUE)
        else:
            run_job.delay(group[0], SyncRun.Trigger.SCHEDULE)
    return len(rows)


@shared_task
def run_jobs_batched(job_ids: list[int], trigger: str = SyncRun.Trigger.SCHEDULE) -> list[str]:
    """Incremental runs of one connection's jobs, their first requests in one $batch."""
    results = []
    for job_id, outcome in zip(job_ids, engine.run_connection(job_ids, trigger), strict=True):
        scheduling.settle(job_id, outcome)
        if outcome.retry_in is not None:
            run_job.apply_async((job_id, SyncRun.Trigger.RETRY), countdown=outcome.retry_in)
        results.append(outcome.run.outcome if outcome.run else f"skipped: {outcome.skipped}")
    return results


# A job found leased is tried again when the lease runs out, this many times at most.
LEASE_WAITS = 3


@shared_task
def run_job(job_id: int, trigger: str = SyncRun.Trigger.SCHEDULE, lease_waits: int = 0) -> str:
    outcome = engine.run(job_id, trigger)
    scheduling.settle(job_id, outcome)
    if dispatch.room_freed():
        # Due jobs wait for the room this run leaves (an onboarding): fill it now, not at
        # beat's next tick.
        dispatch_due_syncs.delay()
    if outcome.retry_in is not None:
        # Throttled for longer than a worker should sleep: come back later, freeing the worker.
        if outcome.run is not None and outcome.run.full_resync:
            # A first load: dispatch takes the job up again once its wait is over (the run
            # left it due then). A countdown task would be held by a worker and, with the
            # others a budget window deferred, run in a herd ahead of other tenants' syncs.
            return f"deferred {outcome.retry_in:.1f} s, to dispatch"
        run_job.apply_async((job_id, SyncRun.Trigger.RETRY), countdown=outcome.retry_in)
        return f"deferred {outcome.retry_in:.1f} s"
    if outcome.run is None:
        if outcome.lease_left is not None and lease_waits < LEASE_WAITS:
            # Leased: perhaps by a worker that died mid-run (this task may be its redelivery).
            # Come back once the lease has run out, to carry the run on.
            run_job.apply_async(
                (job_id, SyncRun.Trigger.RETRY, lease_waits + 1), countdown=outcome.lease_left + 1
            )
        return f"skipped: {outcome.skipped}"
    return outcome.run.outcome


@shared_task
def renew_subscriptions() -> int:
    """Beat: find the subscriptions to create, repair, renew or delete; one task each."""
    job_ids = subscriptions.due()
    for job_id in job_ids:
        maintain_subscription.delay(job_id)
    return len(job_ids)


@shared_task
def maintain_subscription(job_id: int) -> str:
    return subscriptions.ensure(job_id)


@shared_task
def handle_lifecycle(graph_id: str, event: str) -> str:
    return subscriptions.on_lifecycle(graph_id, event)


@shared_task
def reconcile_org(org_id: int) -> str:
    """Bring an organisation-wide sync's members and jobs in line with its directory."""
    return str(orgsync.reconcile(org_id))
