"""The sync engine: one run of one job, page by page, resumable.

A run holds its job's lease (a conditional UPDATE with an expiry), so a job never runs twice at
once and a dead worker's lease runs out. Each page's records and the cursor it produced are
committed in one transaction: a worker killed at any point leaves the job at the last committed
page, and the next run carries on from there.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from connections import tokens
from connections.identity import FailureClass
from core import backoff
from graphsync import resources, store, subscriptions
from graphsync.client import (
    AccessDenied,
    BatchItem,
    GraphClient,
    GraphError,
    MailboxNotEnabled,
    Meter,
    Page,
    Plan,
    SyncStateExpired,
    error_for,
)
from graphsync.models import MAILBOX_RESOURCES, Record, SyncJob, SyncRun
from graphsync.throttle import RETRYABLE_STATUSES, ThrottleWait

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker took the job (our lease had run out): stop without writing."""


@dataclass
class Outcome:
    run: SyncRun | None
    retry_in: float | None = None  # deferred: run again after this many seconds
    skipped: str = ""  # why nothing ran (the job is leased or disabled)
    lease_left: float | None = None  # when skipped for a lease: seconds until it runs out


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _lease() -> timedelta:
    return timedelta(seconds=settings.GRAPH_JOB_LEASE_SECONDS)


def claim(job_id: int, worker: str) -> SyncJob | None:
    now = timezone.now()
    claimed = (
        SyncJob.objects.filter(pk=job_id, enabled=True)
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
        .update(
            lease_owner=worker,
            lease_expires_at=now + _lease(),
            state=SyncJob.State.RUNNING,
            last_run_at=now,
        )
    )
    if not claimed:
        return None
    return SyncJob.objects.select_related("connection", "connection__app").get(pk=job_id)


def _release(job: SyncJob, worker: str, **fields) -> None:
    SyncJob.objects.filter(pk=job.pk, lease_owner=worker).update(
        lease_owner="", lease_expires_at=None, **fields
    )


def _skipped(job_id: int) -> Outcome:
    held = (
        SyncJob.objects.filter(pk=job_id, enabled=True)
        .values_list("lease_expires_at", flat=True)
        .first()
    )
    if held is None:
        return Outcome(None, skipped="disabled or gone")
    left = max((held - timezone.now()).total_seconds(), 0.0)
    return Outcome(None, skipped="leased by another worker", lease_left=left)


def _open_run(job: SyncJob, trigger: str, worker: str) -> SyncRun:
    # A run still "running" here belonged to a worker that died: this run carries it on.
    SyncRun.objects.filter(job=job, outcome=SyncRun.Outcome.RUNNING).update(
        outcome=SyncRun.Outcome.INTERRUPTED, finished_at=timezone.now()
    )
    return SyncRun.objects.create(
        job=job, tenant_id=job.tenant_id, trigger=trigger, worker=worker[:100]
    )


def run(job_id: int, trigger: str = SyncRun.Trigger.SCHEDULE, worker: str | None = None) -> Outcome:
    worker = worker or worker_id()
    job = claim(job_id, worker)
    if job is None:
        return _skipped(job_id)
    run_ = _open_run(job, trigger, worker)
    client = GraphClient(job.connection, Meter())
    try:
        return _execute(job, run_, client, worker)
    finally:
        client.close()


def _execute(
    job: SyncJob,
    run_: SyncRun,
    client: GraphClient,
    worker: str,
    first: Page | GraphError | None = None,
) -> Outcome:
    """Follow the job to the end of its round, and record how it ended on the run and the job.
    `first` is the first answer when it came from a $batch."""
    meter = client.meter
    try:
        _follow(job, run_, client, worker, first)
    except ThrottleWait as wait:
        seconds = max(wait.seconds, 0.5)
        _finish(
            run_,
            meter,
            SyncRun.Outcome.DEFERRED,
            f"Throttled ({wait.reason} on {wait.scope}): continuing in {seconds:.1f} s.",
        )
        _release(
            job,
            worker,
            state=SyncJob.State.WAITING,
            next_run_at=timezone.now() + timedelta(seconds=seconds),
        )
        return Outcome(run_, retry_in=seconds)
    except LeaseLost:
        _finish(run_, meter, SyncRun.Outcome.INTERRUPTED, "Lease lost to another worker.")
        return Outcome(run_)
    except AccessDenied as exc:
        reason = f"Missing permission ({exc.code}): {exc.message}"
        _finish(run_, meter, SyncRun.Outcome.FAILED, reason)
        _release(
            job,
            worker,
            state=SyncJob.State.DISABLED,
            enabled=False,
            disabled_reason=reason,
            last_error=reason,
        )
        return Outcome(run_)
    except MailboxNotEnabled as exc:
        reason = "The user has no Exchange Online mailbox (MailboxNotEnabledForRESTAPI)."
        _finish(run_, meter, SyncRun.Outcome.FAILED, reason)
        _release(job, worker, last_error=reason)
        SyncJob.objects.filter(connection=job.connection, resource__in=MAILBOX_RESOURCES).update(
            enabled=False, state=SyncJob.State.DISABLED, disabled_reason=reason
        )
        logger.info("mailbox jobs of connection %s disabled: %s", job.connection_id, exc)
        return Outcome(run_)
    except tokens.TokenUnavailable as exc:
        return _failed(
            job,
            run_,
            meter,
            worker,
            f"No token: {exc}",
            exc.retry_in if exc.failure_class == FailureClass.TRANSIENT else job.interval_seconds,
        )
    except GraphError as exc:
        return _failed(job, run_, meter, worker, str(exc), None)
    except Exception as exc:
        _failed(job, run_, meter, worker, f"{type(exc).__name__}: {exc}", None)
        raise
    _finish(run_, meter, SyncRun.Outcome.SUCCEEDED, "")
    now = timezone.now()
    _release(
        job,
        worker,
        state=SyncJob.State.IDLE,
        failure_streak=0,
        last_error="",
        last_success_at=now,
        next_run_at=now + timedelta(seconds=subscriptions.poll_interval(job)),
    )
    return Outcome(run_)


def run_connection(
    job_ids: list[int], trigger: str = SyncRun.Trigger.SCHEDULE, worker: str | None = None
) -> list[Outcome]:
    """Run several jobs of one connection, their first requests sent together in one $batch
    (an incremental round usually ends there: one HTTP request instead of one per job). A page
    with more to follow, an item throttled or failed, carries on alone. Outcomes come in the
    order of `job_ids`."""
    worker = worker or worker_id()
    claimed = [job for job in (claim(pk, worker) for pk in job_ids) if job is not None]
    outcomes = {pk: _skipped(pk) for pk in job_ids if pk not in {job.pk for job in claimed}}
    if claimed:
        client = GraphClient(claimed[0].connection, Meter())
        runs = {job.pk: _open_run(job, trigger, worker) for job in claimed}
        meters = {job.pk: Meter() for job in claimed}
        try:
            firsts = _batch_first_pages(client, claimed, worker, runs, meters)
            for job in claimed:
                client.meter = meters[job.pk]
                outcomes[job.pk] = _execute(job, runs[job.pk], client, worker, firsts.get(job.pk))
        finally:
            client.close()
    return [outcomes[pk] for pk in job_ids]


def _batch_first_pages(client, jobs, worker, runs, meters) -> dict[int, Page | GraphError]:
    """One $batch with each job's next request. Returns the answers to hand to _execute; a
    throttled item is left out after cooling its scope down, so the job asks again on its own
    once its own Retry-After has passed."""
    items, plans = [], []
    for job in jobs:
        spec = resources.spec(job.resource)
        if not job.cursor:
            _start_round(job, worker)
            SyncRun.objects.filter(pk=runs[job.pk].pk).update(full_resync=True)
        url = job.cursor or spec.first_url(job, client.base)
        cost = spec.cost_next if job.cursor_is_delta else spec.cost_first
        items.append(BatchItem(str(job.pk), url, spec.headers(job)))
        plans.append(client.plan(spec.scope, cost))
    budgets, costs = {}, {}
    for plan in plans:  # each item counts against its own scopes
        budgets.update(plan.budgets)
        for scope, cost in plan.costs.items():
            costs[scope] = costs.get(scope, 0) + cost
    answers = client.batch(items, Plan(budgets, costs))
    firsts: dict[int, Page | GraphError] = {}
    for job, plan, answer in zip(jobs, plans, answers, strict=True):
        meters[job.pk].requests += 1
        if answer.status in RETRYABLE_STATUSES:
            meters[job.pk].throttled += 1
            client.throttle.throttled(plan.scopes, _header(answer.headers, "Retry-After"), 1)
        elif answer.status >= 400:
            firsts[job.pk] = error_for(answer.status, answer.body, answer.headers)
        else:
            firsts[job.pk] = Page.of(answer.body or {})
    return firsts


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return str(value)
    return None


def _failed(job, run_, meter, worker, error: str, retry_in: float | None) -> Outcome:
    streak = job.failure_streak + 1
    delay = retry_in if retry_in is not None else backoff.full_jitter(streak, base=30, cap=3600)
    _finish(run_, meter, SyncRun.Outcome.FAILED, error)
    _release(
        job,
        worker,
        state=SyncJob.State.FAILING,
        failure_streak=streak,
        last_error=error,
        next_run_at=timezone.now() + timedelta(seconds=max(delay, 1)),
    )
    return Outcome(run_)


def recount(job_id: int) -> None:
    """The exact number of live records. commit_page moves the count page by page; a record
    that comes back after a deletion is counted as updated there, so a run that wrote anything
    ends with a recount (one index scan of the job's rows)."""
    live = Record.objects.filter(job=OuterRef("pk"), deleted_at__isnull=True).values("job")
    SyncJob.objects.filter(pk=job_id).update(
        live_count=Coalesce(Subquery(live.annotate(n=Count("pk")).values("n")), 0)
    )


def _finish(run_: SyncRun, meter: Meter, outcome: str, error: str) -> None:
    SyncRun.objects.filter(pk=run_.pk).update(
        outcome=outcome,
        error=error,
        finished_at=timezone.now(),
        requests=meter.requests,
        throttled=meter.throttled,
        seconds_waited=meter.seconds_waited,
    )
    run_.refresh_from_db()
    if run_.created or run_.updated or run_.deleted:
        recount(run_.job_id)


def _start_round(job: SyncJob, worker: str, location: str | None = None) -> None:
    """A round from scratch (first sync, reset, or expired delta): a resync whose end marks
    what it did not see again as deleted."""
    job.cursor = location or ""
    job.cursor_is_delta = False
    job.resyncing = True
    job.generation += 1
    updated = SyncJob.objects.filter(pk=job.pk, lease_owner=worker).update(
        cursor=job.cursor, cursor_is_delta=False, resyncing=True, generation=job.generation
    )
    if not updated:
        raise LeaseLost


def _follow(
    job: SyncJob,
    run_: SyncRun,
    client: GraphClient,
    worker: str,
    first: Page | GraphError | None = None,
) -> None:
    spec = resources.spec(job.resource)
    resynced = False
    if not job.cursor and first is None and not job.resyncing:
        _start_round(job, worker)
        SyncRun.objects.filter(pk=run_.pk).update(full_resync=True)
    page = first if isinstance(first, Page) else None
    failure = first if isinstance(first, GraphError) else None
    ahead: Future[Page] | None = None  # the page after `page`, already on its way
    while True:
        if page is None:
            url = job.cursor or spec.first_url(job, client.base)
            cost = spec.cost_next if job.cursor else spec.cost_first
            try:
                if failure is not None:  # the $batch's answer for this job
                    failure, raised = None, failure
                    raise raised
                if ahead is not None:  # fetched from job.cursor, which is `url`
                    fetched, ahead = ahead, None
                    page = fetched.result()
                else:
                    page = client.get_page(url, client.plan(spec.scope, cost), spec.headers(job))
            except SyncStateExpired as exc:
                if resynced:
                    raise
                resynced = True
                logger.info("job %s: sync state expired (%s), resyncing", job.pk, exc.code)
                _start_round(job, worker, exc.location)
                SyncRun.objects.filter(pk=run_.pk).update(full_resync=True)
                continue
        if spec.delta and page.next_link and not page.delta_link:
            # Fetch the next page while this one is written. Only reading runs ahead: the
            # cursor still moves in commit_page's transaction, with the page that produced it.
            plan = client.plan(spec.scope, spec.cost_next)
            ahead = client.prefetch_page(page.next_link, plan, spec.headers(job))
        done = commit_page(job, run_, spec, page, worker, client.meter)
        if done:
            return
        page = None


def commit_page(
    job: SyncJob, run_: SyncRun, spec: resources.Spec, page: Page, worker: str, meter: Meter
) -> bool:
    """Store a page and the cursor it produced together. Returns True when the round ended."""
    now = timezone.now()
    ended = bool(page.delta_link) or not page.next_link
    with transaction.atomic():
        counts = store.apply_page(job, spec, page.items, now)
        fields = {
            "cursor": (page.next_link or page.delta_link or "") if spec.delta else "",
            "cursor_is_delta": bool(page.delta_link),
            "lease_expires_at": now + _lease(),
        }
        if ended and job.resyncing:
            counts.deleted += store.finish_resync(job, now)
            fields["resyncing"] = False
        moved = F("live_count") + counts.created - counts.deleted
        if not SyncJob.objects.filter(pk=job.pk, lease_owner=worker).update(
            **fields, live_count=Greatest(moved, 0)
        ):
            raise LeaseLost
        SyncRun.objects.filter(pk=run_.pk).update(
            pages=F("pages") + 1,
            created=F("created") + counts.created,
            updated=F("updated") + counts.updated,
            deleted=F("deleted") + counts.deleted,
            requests=meter.requests,
            throttled=meter.throttled,
            seconds_waited=meter.seconds_waited,
        )
    for name, value in fields.items():
        setattr(job, name, value)
    return ended
