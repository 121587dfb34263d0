"""The engine in real Celery worker processes: throttling, re-enqueueing, killed workers."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.utils import timezone

from connections.models import Connection
from graphsync.models import Record, Resource, SyncJob, SyncRun
from graphsync.tasks import run_job
from tests.conftest import ADELE, MS_CLIENT_ID, WORKER_MAILBOX_BUDGET
from tests.flows import connected, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
MAILBOX = (Resource.MAIL, Resource.CALENDAR, Resource.CONTACTS)


@pytest.fixture
def adele(client, microsoft, contoso):
    return connected(client, microsoft, contoso.member, contoso.app)


def emulator_ids(microsoft, kind, folder=None) -> set[str]:
    return set(microsoft.control.items(ADELE, kind, folder=folder, limit=100_000)["ids"])


def live_ids(job) -> set[str]:
    return set(
        Record.objects.filter(job=job, deleted_at__isnull=True).values_list("graph_id", flat=True)
    )


def test_three_workers_share_one_throttled_mailbox(celery_worker, microsoft, adele):
    microsoft.control.throttle_mailbox(
        MS_CLIENT_ID,
        ADELE,
        budget=WORKER_MAILBOX_BUDGET["limit"],
        window_seconds=WORKER_MAILBOX_BUDGET["window"],
        max_in_flight=4,
        latency_ms=40,
    )
    jobs = list(SyncJob.objects.filter(connection=adele, resource__in=MAILBOX))
    for job in jobs:
        job.options = {"page_size": 3, "days_back": 3650, "days_ahead": 3650}
        job.save(update_fields=["options"])
    microsoft.control.reset_counters()
    for job in jobs:
        run_job.delay(job.pk)
    wait_for(lambda: all(SyncJob.objects.get(pk=j.pk).last_success_at for j in jobs), 120)

    counters = microsoft.control.mailbox_counters(MS_CLIENT_ID, ADELE)
    assert counters["requests"] > WORKER_MAILBOX_BUDGET["limit"]  # the budget had to bind
    assert counters["peak_concurrency"] <= 4
    assert counters["budget_429"] == 0 and counters["concurrency_429"] == 0
    expected = {
        ("mail", "inbox"): emulator_ids(microsoft, "messages", "inbox"),
        ("mail", "sentitems"): emulator_ids(microsoft, "messages", "sentitems"),
        ("calendar", ""): emulator_ids(microsoft, "events"),
        ("contacts", ""): emulator_ids(microsoft, "contacts"),
    }
    for job in jobs:
        assert live_ids(job) == expected[(job.resource, job.folder)]
    deferred = SyncRun.objects.filter(job__in=jobs, outcome=SyncRun.Outcome.DEFERRED).count()
    assert deferred >= 1  # long waits went back to the queue instead of sleeping


def test_a_long_retry_after_re_enqueues_instead_of_sleeping(celery_worker, microsoft, adele):
    job = SyncJob.objects.get(connection=adele, resource=Resource.MAIL, folder="inbox")
    microsoft.control.throttle_mailbox(
        MS_CLIENT_ID, ADELE, rate_429=1.0, retry_after="seconds", retry_after_seconds=30
    )
    started = time.monotonic()
    assert run_job.delay(job.pk).get(timeout=30).startswith("deferred")
    assert time.monotonic() - started < 10  # the worker was not held for 30 s
    run = SyncRun.objects.get(job=job)
    assert run.outcome == SyncRun.Outcome.DEFERRED and run.throttled == 1
    job.refresh_from_db()
    assert job.state == SyncJob.State.WAITING
    assert 25 < (job.next_run_at - timezone.now()).total_seconds() <= 31


def test_a_killed_worker_run_resumes_with_nothing_lost_or_doubled(celery_worker, microsoft, adele):
    job = SyncJob.objects.get(connection=adele, resource=Resource.MAIL, folder="inbox")
    job.options = {"page_size": 4}
    job.save(update_fields=["options"])
    microsoft.control.throttle_mailbox(MS_CLIENT_ID, ADELE, latency_ms=250)
    run_job.delay(job.pk)
    first = wait_for(
        lambda: SyncRun.objects.filter(job=job, pages__gte=3).first(), timeout=60, every=0.05
    )
    pid = int(first.worker.split(":")[1])
    os.kill(pid, signal.SIGKILL)  # the prefork child running the task, mid-run

    # The task is redelivered, waits out the dead worker's lease, and carries the run on.
    try:
        wait_for(lambda: SyncJob.objects.get(pk=job.pk).last_success_at, timeout=60)
    except AssertionError:
        print(celery_worker.log_path.read_text()[-6000:])
        raise
    expected = emulator_ids(microsoft, "messages", "inbox")
    assert live_ids(job) == expected
    assert Record.objects.filter(job=job).count() == len(expected)
    runs = list(SyncRun.objects.filter(job=job).order_by("started_at"))
    assert runs[0].outcome == SyncRun.Outcome.INTERRUPTED
    assert runs[-1].outcome == SyncRun.Outcome.SUCCEEDED
    # Each item was created exactly once across the runs: nothing re-read from the start.
    assert sum(run.created for run in runs) == len(expected)


def test_a_token_expiring_mid_sync_is_refreshed_once(microsoft, adele):
    from graphsync import engine

    job = SyncJob.objects.get(connection=adele, resource=Resource.MAIL, folder="inbox")
    job.options = {"page_size": 30}
    job.save(update_fields=["options"])
    microsoft.control.reset_counters()
    # Microsoft ends the token's life early; Graphport still believes it valid for an hour.
    microsoft.control.expire_access_tokens(token=adele.access_token)
    run = engine.run(job.pk).run
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert microsoft.control.token_request_count(MS_CLIENT_ID, "refresh_token") == 1
    assert Connection.objects.get(pk=adele.pk).access_token != adele.access_token
    assert live_ids(job) == emulator_ids(microsoft, "messages", "inbox")
