"""The engine in real Celery worker processes: throttling, re-enqueueing, killed workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from django.db import connections as db_connections
from django.utils import timezone

from connections.models import Connection
from devtools.localservices import LocalRedis
from graphsync.models import Record, Resource, SyncJob, SyncRun
from graphsync.tasks import dispatch_due_syncs, run_job
from tests.conftest import (
    ADELE,
    MS_CLIENT_ID,
    ROOT,
    WORKER_MAILBOX_BUDGET,
    database_url_for_subprocesses,
)
from tests.flows import connected, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
MAILBOX = (Resource.MAIL, Resource.CALENDAR, Resource.CONTACTS)


# --- workers of a test's own, on a Redis of its own ----------------------------------------------
# For tests that kill workers or restart Redis: the session's worker and Redis stay out of it.


def start_worker(
    log: Path, redis_url: str, name: str, queues: str = "tokens,sync,bulk,default,webhooks", **env
):
    """A Celery worker process like the session's `celery_worker`, on the broker `redis_url`."""
    environment = dict(
        os.environ,
        DATABASE_URL=database_url_for_subprocesses(),
        REDIS_URL=redis_url,
        GRAPH_BUDGETS_JSON=json.dumps({"mailbox": WORKER_MAILBOX_BUDGET}),
        **env,
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", queues),
                *("--concurrency", "2", "--loglevel", "INFO", "--hostname", f"{name}@%h"),
            ],
            cwd=ROOT,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process.name = name
    process.log_path = log
    return process


def stop_worker(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def answering(broker: Celery, *workers: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until each of `workers` answers a ping on `broker`."""

    def all_answer() -> bool:
        for worker in workers:
            if worker.poll() is not None:
                pytest.fail(f"worker {worker.name} exited:\n{worker.log_path.read_text()[-4000:]}")
        try:
            replies = broker.control.ping(timeout=0.5)
        except Exception:  # the broker is still away
            return False
        names = {name.split("@")[0] for reply in replies for name in reply}
        return names >= {worker.name for worker in workers}

    wait_for(all_answer, timeout=timeout, every=0.2)


def node(worker: subprocess.Popen) -> str:
    return f"{worker.name}@{socket.gethostname()}"  # what the worker's --hostname expands to


def client_of(redis_url: str) -> Celery:
    """A Celery client of a test's own Redis, for tasks (routed by queue name), results, pings."""
    return Celery("tests", broker=redis_url, backend=redis_url, set_as_current=False)


@pytest.fixture
def own_redis(tmp_path):
    server = LocalRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def own_broker(own_redis):
    app = client_of(own_redis.url)
    yield app
    app.close()


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

    def synced() -> bool:
        # Deferred first loads are taken up again by dispatch, which beat runs every 10 s:
        # the test ticks every second.
        dispatch_due_syncs.delay()
        return all(SyncJob.objects.get(pk=j.pk).last_success_at for j in jobs)

    wait_for(synced, 120, every=1)

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


def test_a_dead_worker_process_job_is_taken_over_soon_after_its_lease(
    tmp_path, microsoft, adele, own_broker, own_redis
):
    """The whole worker dies (machine, container, OOM killer): no process is left to hand its
    task back, whose message waits for the broker's hour-long visibility timeout. The next
    dispatch after the lease has run out gives the job to another worker."""
    lease = 6
    job = SyncJob.objects.get(connection=adele, resource=Resource.MAIL, folder="inbox")
    job.options = {"page_size": 4}
    job.save(update_fields=["options"])
    SyncJob.objects.filter(connection=adele).exclude(pk=job.pk).update(
        next_run_at=timezone.now() + timedelta(days=1)
    )
    microsoft.control.throttle_mailbox(MS_CLIENT_ID, ADELE, latency_ms=300)
    env = {"GRAPH_JOB_LEASE_SECONDS": str(lease)}
    first = start_worker(tmp_path / "first.log", own_redis.url, "first", **env)
    # The other worker is up already, only not yet taking syncs, so that the run goes to the first.
    second = start_worker(tmp_path / "second.log", own_redis.url, "second", "tokens,default", **env)
    try:
        answering(own_broker, first, second)

        def beat_tick():
            return own_broker.send_task("graphsync.tasks.dispatch_due_syncs", queue="sync")

        assert beat_tick().get(timeout=30) == 1
        wait_for(lambda: SyncRun.objects.filter(job=job, pages__gte=1).exists(), timeout=30)
        for queue in ("sync", "bulk"):  # a first load (this one) goes to bulk
            assert own_broker.control.add_consumer(queue, destination=[node(second)], reply=True)
        first_run = wait_for(
            lambda: SyncRun.objects.filter(job=job, pages__gte=4).first(), timeout=30, every=0.05
        )
        os.killpg(first.pid, signal.SIGKILL)  # the main process and its pool, mid-run
        killed_at = timezone.now()

        def taken_over():
            beat_tick()  # beat dispatches often; the test ticks every second
            return SyncRun.objects.filter(job=job).exclude(pk=first_run.pk).first()

        try:
            resumed = wait_for(taken_over, timeout=lease + 20, every=1)
        except AssertionError:
            print(second.log_path.read_text()[-6000:])
            raise
        assert (resumed.started_at - killed_at).total_seconds() < lease + 3
        wait_for(lambda: SyncJob.objects.get(pk=job.pk).last_success_at, timeout=60)
    finally:
        stop_worker(first)
        stop_worker(second)

    expected = emulator_ids(microsoft, "messages", "inbox")
    assert live_ids(job) == expected
    runs = list(SyncRun.objects.filter(job=job).order_by("started_at"))
    assert runs[0].outcome == SyncRun.Outcome.INTERRUPTED
    assert runs[-1].outcome == SyncRun.Outcome.SUCCEEDED
    assert sum(run.created for run in runs) == len(expected)  # carried on, nothing re-read


def test_a_page_slower_than_the_lease_keeps_the_job_leased(settings, microsoft, adele):
    """Between two pages the run's heartbeat renews the lease, so a lease of seconds survives a
    slow Graph answer (or a throttle wait) and no second worker starts the same job."""
    from graphsync import engine

    settings.GRAPH_JOB_LEASE_SECONDS = 2
    job = SyncJob.objects.get(connection=adele, resource=Resource.MAIL, folder="inbox")
    job.options = {"page_size": 200}  # one page, which takes longer than the lease
    job.save(update_fields=["options"])
    microsoft.control.throttle_mailbox(MS_CLIENT_ID, ADELE, latency_ms=4500)

    def run_in_a_thread():
        try:
            return engine.run(job.pk)
        finally:
            db_connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_in_a_thread)
        wait_for(lambda: SyncRun.objects.filter(job=job).exists(), timeout=10, every=0.05)
        time.sleep(3)  # past the lease taken at the start, before the page is back
        assert SyncJob.objects.claim(job.pk, "another-worker") is None
        outcome = running.result(timeout=30)
    assert outcome.run.outcome == SyncRun.Outcome.SUCCEEDED, outcome.run.error
    assert live_ids(job) == emulator_ids(microsoft, "messages", "inbox")
