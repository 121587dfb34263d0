"""The sync engine: one run of one job, page by page, resumable.

A run holds its job's lease (a conditional UPDATE with an expiry), so a job never runs twice at
once and a dead worker's lease runs out. The lease is renewed with every page and by the run's
heartbeat between pages, so it can be short: a dead worker's job is free within seconds. Each
page's records and the cursor it produced are committed in one transaction: a worker killed at
any point leaves the job at the last committed page, and the next run carries on from there.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict
from datetime import timedelta

from django.db import DatabaseError, connections, transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from connections import tokens
from connections.identity import FailureClass
from core import backoff, logs, metrics
from graphsync import orgsync, resources, store, sync_events
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
from graphsync.models import MAILBOX_RESOURCES, SyncJob, SyncRun
from graphsync.scheduling import Outcome, poll_interval
from graphsync.throttle import RETRYABLE_STATUSES, ThrottleWait

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker took the job (our lease had run out): stop without writing."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat:
    """Renews the leases a run holds, every third of the lease, for as long as the run lasts.

    A thread rather than renewals at the run's own waiting points: between two commits a run
    waits on an HTTP read (up to MICROSOFT_HTTP_TIMEOUT, six attempts), on throttle sleeps and on
    the database, and no single place sees all of them. The thread renews whatever the run waits
    on, and it dies with the worker process: one killed (SIGKILL, the OOM killer, the task's hard
    time limit) stops renewing, and its job is free one lease later. That is what lets the lease
    be seconds long instead of outlasting the slowest page. A run stuck in a live process keeps
    its lease until the task's hard time limit ends the process.
    """

    def __init__(self, job_ids: list[int], worker: str):
        self.job_ids = job_ids
        self.worker = worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        # Not for ever: a renewal waiting on the job's row lock held by a transaction around
        # this run would wait for us in turn. Once the run has released the lease, a late
        # renewal matches nothing.
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        every = SyncJob.lease().total_seconds() / 3
        jobs = SyncJob.objects.filter(pk__in=self.job_ids)
        try:
            while not self._stop.wait(every):
                try:
                    if not jobs.renew_leases(self.worker):
                        return  # released or lost (the main thread stops at its next write)
                except DatabaseError:
                    # The database restarting, say: try again with a new connection next time.
                    # Should it stay away longer than the lease, the job is taken over.
                    logger.warning("jobs %s: lease renewal failed", self.job_ids, exc_info=True)
                    connections.close_all()
        finally:
            connections.close_all()  # this thread's own connection


def _skipped(job_id: int) -> Outcome:
    job = SyncJob.objects.filter(pk=job_id, enabled=True).only("lease_expires_at").first()
    left = job.lease_left() if job else None
    if left is None:
        return Outcome(None, skipped="disabled or gone")
    return Outcome(None, skipped="leased by another worker", lease_left=left)


def run(job_id: int, trigger: str = SyncRun.Trigger.SCHEDULE, worker: str | None = None) -> Outcome:
    worker = worker or worker_id()
    job = SyncJob.objects.claim(job_id, worker)
    if job is None:
        return _skipped(job_id)
    with (
        logs.bound(tenant_id=job.tenant_id, connection_id=job.connection_id),
        Heartbeat([job.pk], worker),
    ):
        run_ = SyncRun.objects.open(job, trigger, worker)
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
    except Exception as exc:
        for kind, end in ENDINGS:
            if isinstance(exc, kind):
                return end(job, run_, meter, worker, exc)
        _failed(job, run_, meter, worker, f"{type(exc).__name__}: {exc}")
        raise
    with transaction.atomic():  # the run's end and its event commit together
        run_.finish(SyncRun.Outcome.SUCCEEDED, **asdict(meter))
        now = timezone.now()
        job.release(
            worker,
            state=SyncJob.State.IDLE,
            failure_streak=0,
            last_error="",
            last_success_at=now,
            next_run_at=now + timedelta(seconds=poll_interval(job)),
        )
        sync_events.completed(job, run_)
        orgsync.directory_changed(job)
    return Outcome(run_)


# --- how a run ends, by what stopped it ---------------------------------------------------------


def _deferred(job, run_, meter, worker, wait: ThrottleWait) -> Outcome:
    """Throttled for longer than a worker should sleep: the task comes back later."""
    seconds = max(wait.seconds, 0.5)
    error = f"Throttled ({wait.reason} on {wait.scope}): continuing in {seconds:.1f} s."
    run_.finish(SyncRun.Outcome.DEFERRED, error, **asdict(meter))
    job.release(
        worker,
        state=SyncJob.State.WAITING,
        next_run_at=timezone.now() + timedelta(seconds=seconds),
    )
    return Outcome(run_, retry_in=seconds)


def _interrupted(job, run_, meter, worker, exc: LeaseLost) -> Outcome:
    run_.finish(SyncRun.Outcome.INTERRUPTED, "Lease lost to another worker.", **asdict(meter))
    return Outcome(run_)


def _denied(job, run_, meter, worker, exc: AccessDenied) -> Outcome:
    if job.mailbox and orgsync.app_lacks(job, exc.code):
        # Every user would be refused: one pause and one notice, not a failure per job.
        reason = f"The app lacks a permission ({exc.code}): {exc.message}"
        with transaction.atomic():
            run_.finish(SyncRun.Outcome.FAILED, reason, **asdict(meter))
            job.release(worker, last_error=reason)
        orgsync.pause(job.connection_id, reason)
        return Outcome(run_)
    if job.mailbox and job.resource in MAILBOX_RESOURCES:
        # This mailbox alone is closed to the app (an Exchange application access policy, RBAC
        # for Applications): its mail, calendar and contacts all are.
        reason = f"The app may not read this user's mailbox ({exc.code}): {exc.message}"
        with transaction.atomic():
            run_.finish(SyncRun.Outcome.FAILED, reason, **asdict(meter))
            job.release(worker, **SyncJob.disabled_fields(reason), last_error=reason)
            sync_events.failed(job, run_, reason, streak=1)
            orgsync.stop_user(job, reason, MAILBOX_RESOURCES)
        return Outcome(run_)
    reason = f"Missing permission ({exc.code}): {exc.message}"
    with transaction.atomic():
        run_.finish(SyncRun.Outcome.FAILED, reason, **asdict(meter))
        job.release(worker, **SyncJob.disabled_fields(reason), last_error=reason)
        sync_events.failed(job, run_, reason, streak=1)
    return Outcome(run_)


def _no_mailbox(job, run_, meter, worker, exc: MailboxNotEnabled) -> Outcome:
    reason = (
        "The user has no Exchange Online mailbox, or it is inactive or soft-deleted "
        "(MailboxNotEnabledForRESTAPI)."
    )
    with transaction.atomic():
        run_.finish(SyncRun.Outcome.FAILED, reason, **asdict(meter))
        job.release(worker, last_error=reason)
        sync_events.failed(job, run_, reason, streak=1)
    # That user's mailbox jobs only: on an app-only connection, other users carry on.
    SyncJob.objects.filter(
        connection=job.connection, mailbox=job.mailbox, resource__in=MAILBOX_RESOURCES
    ).disable(reason)
    logger.info(
        "mailbox jobs of connection %s%s disabled: %s",
        job.connection_id,
        f" for user {job.mailbox}" if job.mailbox else "",
        exc,
    )
    return Outcome(run_)


def _no_token(job, run_, meter, worker, exc: tokens.TokenUnavailable) -> Outcome:
    transient = exc.failure_class == FailureClass.TRANSIENT
    retry_in = exc.retry_in if transient else job.interval_seconds
    return _failed(job, run_, meter, worker, f"No token: {exc}", retry_in)


def _graph_failed(job, run_, meter, worker, exc: GraphError) -> Outcome:
    return _failed(job, run_, meter, worker, str(exc))


def _failed(job, run_, meter, worker, error: str, retry_in: float | None = None) -> Outcome:
    streak = job.failure_streak + 1
    delay = retry_in if retry_in is not None else backoff.full_jitter(streak, base=30, cap=3600)
    with transaction.atomic():
        run_.finish(SyncRun.Outcome.FAILED, error, **asdict(meter))
        job.release(
            worker,
            state=SyncJob.State.FAILING,
            failure_streak=streak,
            last_error=error,
            next_run_at=timezone.now() + timedelta(seconds=max(delay, 1)),
        )
        sync_events.failed(job, run_, error, streak)
    return Outcome(run_)


# What stops a run, and how the run and its job end then; the first match wins. Anything else is
# a bug: the run fails, and the exception goes on to the task's log.
ENDINGS: tuple[tuple[type[Exception], Callable[..., Outcome]], ...] = (
    (ThrottleWait, _deferred),
    (LeaseLost, _interrupted),
    (AccessDenied, _denied),
    (MailboxNotEnabled, _no_mailbox),
    (tokens.TokenUnavailable, _no_token),
    (GraphError, _graph_failed),
)


def run_connection(
    job_ids: list[int], trigger: str = SyncRun.Trigger.SCHEDULE, worker: str | None = None
) -> list[Outcome]:
    """Run several jobs of one connection, their first requests sent together in one $batch
    (an incremental round usually ends there: one HTTP request instead of one per job). A page
    with more to follow, an item throttled or failed, carries on alone. Outcomes come in the
    order of `job_ids`."""
    worker = worker or worker_id()
    claimed = [job for job in (SyncJob.objects.claim(pk, worker) for pk in job_ids) if job]
    outcomes = {pk: _skipped(pk) for pk in job_ids if pk not in {job.pk for job in claimed}}
    if claimed:
        with (
            logs.bound(tenant_id=claimed[0].tenant_id, connection_id=claimed[0].connection_id),
            Heartbeat([job.pk for job in claimed], worker),
        ):
            client = GraphClient(claimed[0].connection, Meter())
            runs = {job.pk: SyncRun.objects.open(job, trigger, worker) for job in claimed}
            meters = {job.pk: Meter() for job in claimed}
            try:
                firsts = _batch_first_pages(client, claimed, worker, runs, meters)
                for job in claimed:
                    client.meter = meters[job.pk]
                    first = firsts.get(job.pk)
                    outcomes[job.pk] = _execute(job, runs[job.pk], client, worker, first)
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
            runs[job.pk].mark_full_resync()
        url = job.cursor or spec.first_url(job, client.base)
        cost = spec.cost_next if job.cursor_is_delta else spec.cost_first
        items.append(BatchItem(str(job.pk), url, spec.headers(job)))
        plans.append(client.plan(spec.scope, cost, job.mailbox))
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
            client.throttle.throttled(plan.cooled, _header(answer.headers, "Retry-After"), 1)
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


def _start_round(job: SyncJob, worker: str, location: str | None = None) -> None:
    """A round from scratch (first sync, reset, or expired delta): a resync whose end marks
    what it did not see again as deleted."""
    job.cursor = location or ""
    job.cursor_is_delta = False
    job.resyncing = True
    job.generation += 1
    if not job.write_held(
        worker,
        cursor=job.cursor,
        cursor_is_delta=False,
        resyncing=True,
        generation=job.generation,
    ):
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
        run_.mark_full_resync()
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
                    page = client.get_page(
                        url, client.plan(spec.scope, cost, job.mailbox), spec.headers(job)
                    )
            except SyncStateExpired as exc:
                if resynced:
                    raise
                resynced = True
                logger.info("job %s: sync state expired (%s), resyncing", job.pk, exc.code)
                _start_round(job, worker, exc.location)
                run_.mark_full_resync()
                continue
        if spec.delta and page.next_link and not page.delta_link:
            # Fetch the next page while this one is written. Only reading runs ahead: the
            # cursor still moves in commit_page's transaction, with the page that produced it.
            plan = client.plan(spec.scope, spec.cost_next, job.mailbox)
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
            **SyncJob.leased_until(now),
        }
        if ended and job.resyncing:
            counts.add(store.finish_resync(job, now))
            fields["resyncing"] = False
        moved = F("live_count") + counts.created - counts.deleted
        if not job.write_held(worker, **fields, live_count=Greatest(moved, 0)):
            raise LeaseLost
        run_.add_page(counts, **asdict(meter))
    metrics.records_written(job.resource, counts.created, counts.updated, counts.deleted)
    for name, value in fields.items():
        setattr(job, name, value)
    return ended
