"""$batch rounds, with a throttled item retried alone; fair dispatch across tenants."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from connections.models import Connection, EntraApp
from graphsync import dispatch, engine
from graphsync.models import Record, Resource, SyncJob, SyncRun
from tests.conftest import ADELE, MS_CLIENT_ID
from tests.flows import connected

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def adele(client, microsoft, contoso):
    return connected(client, microsoft, contoso.member, contoso.app)


def mailbox_jobs(connection):
    return list(
        SyncJob.objects.filter(
            connection=connection,
            resource__in=[Resource.MAIL, Resource.CALENDAR, Resource.CONTACTS],
        ).order_by("pk")
    )


def test_an_incremental_round_is_one_batch(microsoft, adele):
    jobs = mailbox_jobs(adele)
    for job in jobs:
        job.options = {"days_back": 3650, "days_ahead": 3650}
        job.save(update_fields=["options"])
        engine.run(job.pk)  # initial syncs
    added = microsoft.control.add_items(ADELE, "messages", count=2, folder="inbox")
    microsoft.control.reset_counters()

    outcomes = engine.run_connection([job.pk for job in jobs])
    assert [o.run.outcome for o in outcomes] == [SyncRun.Outcome.SUCCEEDED] * 4
    log = microsoft.control.requests(host="graph")
    items = [entry for entry in log if entry.get("batch_item")]
    alone = [
        entry for entry in log if not entry.get("batch_item") and "$batch" not in entry["path"]
    ]
    assert len(items) == 4 and alone == []  # one HTTP request for the whole round
    inbox = next(job for job in jobs if job.folder == "inbox")
    assert set(added) <= set(Record.objects.filter(job=inbox).values_list("graph_id", flat=True))
    assert SyncRun.objects.filter(job=inbox).latest("started_at").created == 2


def test_a_throttled_batch_item_is_retried_alone_after_its_retry_after(microsoft, adele):
    jobs = mailbox_jobs(adele)
    for job in jobs:
        job.options = {"days_back": 3650, "days_ahead": 3650}
        job.save(update_fields=["options"])
        engine.run(job.pk)
    # Microsoft lets two of the four items through this window and throttles the others.
    microsoft.control.throttle_mailbox(
        MS_CLIENT_ID,
        ADELE,
        budget=2,
        window_seconds=2,
        retry_after="seconds",
        retry_after_seconds=1,
    )
    microsoft.control.reset_counters()
    outcomes = engine.run_connection([job.pk for job in jobs])
    runs = [o.run for o in outcomes]
    assert [run.outcome for run in runs] == [SyncRun.Outcome.SUCCEEDED] * 4
    assert sorted(run.throttled for run in runs) == [0, 0, 1, 1]
    # The retried items waited for their Retry-After (the first one to go waits it out).
    assert sum(run.seconds_waited for run in runs if run.throttled) > 0.5
    counters = microsoft.control.mailbox_counters(MS_CLIENT_ID, ADELE)
    assert counters["throttled_429"] == 2  # the two batch items, and no more after waiting


def test_dispatch_is_fair_across_tenants(acme, globex, settings):
    monkey = dispatch.PER_TENANT
    dispatch.PER_TENANT = 3
    try:
        now = timezone.now()
        big = []
        for n in range(10):
            conn = Connection.objects.create(
                app=acme.app, ms_tenant_id="t", ms_object_id=f"acme-{n}", access_token="a"
            )
            big.append(
                SyncJob.objects.create(
                    connection=conn,
                    tenant=acme.tenant,
                    resource=Resource.PROFILE,
                    next_run_at=now - timedelta(hours=1, minutes=n),
                ).pk
            )
        small = SyncJob.objects.create(
            connection=globex.connection,
            tenant=globex.tenant,
            resource=Resource.PROFILE,
            next_run_at=now - timedelta(minutes=1),
        ).pk
        rows = dispatch.due(now)
        ids = [pk for pk, _, _ in rows]
        assert small in ids[:2]  # the small tenant is not behind the big one's backlog
        assert len([pk for pk in ids if pk in big]) == 3
        assert SyncJob.objects.get(pk=small).state == SyncJob.State.QUEUED
        # Queued jobs are not dispatched twice, and a tenant's jobs in flight take its room.
        assert dispatch.due(now) == []
        first = [pk for pk in ids if pk in big]
        SyncJob.objects.filter(pk=first[0]).update(
            state=SyncJob.State.RUNNING, lease_expires_at=now + timedelta(seconds=30)
        )
        SyncJob.objects.filter(pk__in=first[1:]).update(
            state=SyncJob.State.IDLE, next_run_at=now + timedelta(hours=1)
        )
        again = [pk for pk, _, _ in dispatch.due(now)]
        assert not set(again) & set(ids)
        assert len(again) == 2  # one of the first three still runs
    finally:
        dispatch.PER_TENANT = monkey


def test_first_loads_go_to_the_bulk_queue_and_incremental_runs_to_sync(acme, monkeypatch):
    sent = []
    monkeypatch.setattr(
        "graphsync.tasks.run_job.apply_async",
        lambda args, queue=None, **kw: sent.append((args[0], queue)),
    )
    monkeypatch.setattr("graphsync.tasks.run_job.delay", lambda *args: sent.append((args[0], None)))
    now = timezone.now() - timedelta(minutes=1)
    fresh = SyncJob.objects.create(
        connection=acme.connection, tenant=acme.tenant, resource=Resource.MAIL, folder="inbox",
        next_run_at=now,
    )  # fmt: skip
    synced = SyncJob.objects.create(
        connection=acme.connection, tenant=acme.tenant, resource=Resource.CALENDAR,
        cursor="https://graph.microsoft.com/v1.0/me/calendarView/delta?$deltatoken=x",
        cursor_is_delta=True, next_run_at=now,
    )  # fmt: skip
    from graphsync.tasks import dispatch_due_syncs

    assert dispatch_due_syncs() == 2
    assert sorted(sent) == sorted([(fresh.pk, dispatch.BULK_QUEUE), (synced.pk, None)])


def test_dispatch_skips_paused_revoked_leased_and_cooling_jobs(acme):
    now = timezone.now()
    job = SyncJob.objects.create(
        connection=acme.connection,
        tenant=acme.tenant,
        resource=Resource.PROFILE,
        next_run_at=now - timedelta(minutes=1),
    )
    for change, expected in [
        ({"lease_expires_at": now + timedelta(minutes=1)}, False),
        ({"lease_expires_at": None, "cooldown_until": now + timedelta(minutes=1)}, False),
        ({"cooldown_until": None, "enabled": False}, False),
        ({"enabled": True}, True),
    ]:
        SyncJob.objects.filter(pk=job.pk).update(next_run_at=now - timedelta(minutes=1), **change)
        assert (job.pk in [pk for pk, _, _ in dispatch.due(now)]) is expected
    Connection.objects.filter(pk=acme.connection.pk).update(status=Connection.Status.REVOKED)
    SyncJob.objects.filter(pk=job.pk).update(next_run_at=now - timedelta(minutes=1))
    assert dispatch.due(now) == []
    assert EntraApp.objects.exists()


def test_plan_groups_incremental_jobs_of_a_connection():
    rows = [
        (1, 10, True),
        (2, 20, True),
        (3, 10, True),
        (4, 10, False),
        (5, 10, True),
        (6, 10, True),
        (7, 10, True),
    ]
    assert dispatch.plan(rows) == [[1, 3, 5, 6], [2], [4], [7]]


def test_a_backlog_waiting_for_room_is_dispatched_again_as_runs_end(acme, monkeypatch):
    from core import keys, redis_client
    from graphsync.tasks import dispatch_due_syncs

    shared = redis_client.shared()
    shared.delete(keys.dispatch_soon(), keys.dispatch_backlog())
    monkeypatch.setattr(dispatch, "PER_TENANT", 2)
    monkeypatch.setattr("graphsync.tasks.run_job.apply_async", lambda *a, **kw: None)
    now = timezone.now() - timedelta(minutes=1)
    for n in range(5):
        conn = Connection.objects.create(
            app=acme.app, ms_tenant_id="t", ms_object_id=f"backlog-{n}", access_token="a"
        )
        SyncJob.objects.create(
            connection=conn, tenant=acme.tenant, resource=Resource.PROFILE, next_run_at=now
        )
    assert dispatch_due_syncs() == 2
    # Three wait for room: the first run to end asks for a dispatch, the next one not at once.
    assert dispatch.room_freed() and not dispatch.room_freed()
    shared.delete(keys.dispatch_soon())
    SyncJob.objects.filter(state=SyncJob.State.QUEUED).update(
        state=SyncJob.State.IDLE, next_run_at=now + timedelta(hours=1)
    )
    assert dispatch_due_syncs() == 2
    assert dispatch_due_syncs() == 0
    SyncJob.objects.filter(state=SyncJob.State.QUEUED).update(
        state=SyncJob.State.IDLE, next_run_at=now + timedelta(hours=1)
    )
    assert dispatch_due_syncs() == 1  # the last: nothing waits any more
    assert not dispatch.room_freed()
