"""The member's view of their syncs: what is synced, live progress, and their own records."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from graphsync import engine
from graphsync.models import Record, Resource, SyncJob, SyncRun
from tests.flows import connected
from tests.personas import make_user

pytestmark = pytest.mark.django_db


def make_job(world, resource=Resource.MAIL, folder="inbox", **fields):
    return SyncJob.objects.create(
        connection=world.connection, tenant=world.tenant, resource=resource, folder=folder, **fields
    )


def make_records(job, count, deleted=0, **fields):
    Record.objects.bulk_create(
        [
            Record(
                job=job,
                connection_id=job.connection_id,
                tenant_id=job.tenant_id,
                resource=job.resource,
                graph_id=f"{job.resource}-{job.pk}-{i}",
                title=f"{job.resource} item {i}",
                data={"id": f"{job.resource}-{job.pk}-{i}"},
                deleted_at=timezone.now() if i < deleted else None,
                **fields,
            )
            for i in range(count)
        ]
    )
    SyncJob.objects.filter(pk=job.pk).recount()  # as the worker that writes records leaves the job


def running(job, **figures):
    """The job as a worker holds it mid-run."""
    SyncJob.objects.filter(pk=job.pk).update(
        state=SyncJob.State.RUNNING,
        lease_owner="worker-1",
        lease_expires_at=timezone.now() + timedelta(minutes=2),
    )
    return SyncRun.objects.create(job=job, tenant_id=job.tenant_id, trigger="manual", **figures)


def status_of(client, connection):
    response = client.get(reverse("graphsync:status", args=[connection.pk]))
    assert response.status_code == 200
    return response.json()


def synced_block(page: str, connection) -> str:
    return page.split(f'id="connection-{connection.pk}"', 1)[1].split('class="card', 1)[0]


# --- what is synced --------------------------------------------------------------------------


def test_what_is_synced_shows_live_counts_and_runs(client, acme):
    mail = make_job(acme, last_success_at=timezone.now())
    profile = make_job(acme, Resource.PROFILE, "")
    make_records(mail, 12, deleted=2)
    make_records(profile, 1)
    SyncRun.objects.create(
        job=mail,
        tenant=acme.tenant,
        trigger="first",
        outcome=SyncRun.Outcome.SUCCEEDED,
        finished_at=timezone.now(),
    )
    client.force_login(acme.member)
    block = synced_block(client.get(reverse("connections:mine")).text, acme.connection)
    assert "What is synced" in block
    mail_row = re.search(rf'data-job="{mail.pk}".*?</tr>', block, re.S).group(0)
    assert re.search(r'data-field="live">10<', mail_row)  # deleted ones do not count
    assert "Mail folder" in mail_row and "(inbox)" in mail_row and "succeeded" in mail_row
    profile_row = re.search(rf'data-job="{profile.pk}".*?</tr>', block, re.S).group(0)
    assert re.search(r'data-field="live">1<', profile_row) and "not yet" in profile_row


def test_errors_are_shown_in_plain_words(client, acme):
    make_job(
        acme,
        enabled=False,
        state=SyncJob.State.DISABLED,
        disabled_reason="The user has no Exchange Online mailbox (MailboxNotEnabledForRESTAPI).",
    )
    make_job(
        acme,
        Resource.DRIVE,
        "",
        state=SyncJob.State.FAILING,
        last_error="Graph answered 503 ServiceUnavailable",
    )
    client.force_login(acme.member)
    page = client.get(reverse("connections:mine")).text
    assert "Paused: The user has no Exchange Online mailbox" in page
    assert "The last attempt failed and will be retried: Graph answered 503" in page


def test_the_page_needs_the_same_queries_for_one_job_or_many(client, acme, globex):
    client.force_login(acme.member)
    first = make_job(acme)
    SyncRun.objects.create(job=first, tenant=acme.tenant, trigger="first")
    url = reverse("connections:mine")
    with CaptureQueriesContext(db_connection) as one:
        client.get(url)
    for resource in (Resource.CALENDAR, Resource.CONTACTS, Resource.DRIVE, Resource.PROFILE):
        job = make_job(acme, resource, "")
        make_records(job, 3)
        SyncRun.objects.create(job=job, tenant=acme.tenant, trigger="first")
    with CaptureQueriesContext(db_connection) as many:
        page = client.get(url).text
    assert len(many) == len(one)
    assert page.count("<tr data-job=") == 5


def test_another_members_jobs_are_not_on_my_page(client, acme, globex):
    make_job(acme)
    theirs = make_job(globex)
    client.force_login(acme.member)
    assert f'data-job="{theirs.pk}"' not in client.get(reverse("connections:mine")).text


# --- live progress ---------------------------------------------------------------------------


def test_status_json_reports_the_run_under_way(client, acme):
    job = make_job(acme)
    make_records(job, 5)
    running(job, pages=3, created=120, updated=4, deleted=1)
    client.force_login(acme.member)
    status = status_of(client, acme.connection)
    assert status["busy"] is True
    (entry,) = status["jobs"]
    assert entry["id"] == job.pk and entry["state"] == "running" and entry["live"] == 5
    assert entry["progress"] | {"started_at": None} == {
        "started_at": None,
        "pages": 3,
        "created": 120,
        "updated": 4,
        "deleted": 1,
    }
    page = client.get(reverse("connections:mine")).text
    assert 'data-busy="1">' in page and "setInterval" in page
    assert "page 3: 120 new, 4 changed, 1 deleted so far" in page


def test_status_json_once_the_run_is_over(client, acme):
    job = make_job(acme)
    run = running(job, pages=2)
    SyncRun.objects.filter(pk=run.pk).update(
        outcome=SyncRun.Outcome.SUCCEEDED, finished_at=timezone.now()
    )
    SyncJob.objects.filter(pk=job.pk).update(
        state=SyncJob.State.IDLE, lease_owner="", lease_expires_at=None
    )
    client.force_login(acme.member)
    status = status_of(client, acme.connection)
    assert status["busy"] is False
    assert status["jobs"][0]["progress"] is None
    assert status["jobs"][0]["last_outcome"] == "succeeded"
    assert 'data-busy="1">' not in client.get(reverse("connections:mine")).text


def test_a_dead_workers_run_is_not_live_progress(client, acme):
    job = make_job(acme)
    running(job, pages=1)
    SyncJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(1))
    client.force_login(acme.member)
    status = status_of(client, acme.connection)
    assert status["busy"] is False and status["jobs"][0]["progress"] is None


def test_status_of_someone_elses_connection_is_404(client, acme, globex):
    colleague = make_user("acme-colleague", tenant=acme.tenant, role="member")
    for user in (globex.member, colleague, acme.admin):
        client.force_login(user)
        url = reverse("graphsync:status", args=[acme.connection.pk])
        assert client.get(url).status_code == 404


def test_status_needs_a_login(client, acme):
    response = client.get(reverse("graphsync:status", args=[acme.connection.pk]))
    assert response.status_code == 302 and reverse("login") in response["Location"]


# --- the member's records --------------------------------------------------------------------


def test_records_are_paged_fifty_at_a_time_newest_first(client, acme):
    job = make_job(acme)
    make_records(job, 60, deleted=1)
    client.force_login(acme.member)
    url = reverse("graphsync:records", args=[acme.connection.pk])
    first = client.get(url).text
    assert first.count('href="/sync/records/') == 50
    assert "Page 1 of 2 (60 items)" in first
    second = client.get(url, {"page": 2}).text
    assert second.count('href="/sync/records/') == 10
    assert "deleted" in second  # the oldest one, item 0, was deleted


def test_records_filter_by_resource(client, acme):
    mail, contacts = make_job(acme), make_job(acme, Resource.CONTACTS, "")
    make_records(mail, 2)
    make_records(contacts, 3)
    client.force_login(acme.member)
    url = reverse("graphsync:records", args=[acme.connection.pk])
    page = client.get(url, {"resource": "contacts"}).text
    assert page.count("contacts item") == 3 and "mail item" not in page
    everything = client.get(url, {"resource": "bogus"}).text
    assert everything.count('href="/sync/records/') == 5


def test_record_detail_shows_the_json_escaped(client, acme):
    job = make_job(acme)
    record = Record.objects.create(
        job=job,
        connection=acme.connection,
        tenant=acme.tenant,
        resource=job.resource,
        graph_id="AAMkADx",
        title="<script>alert('t')</script>",
        data={"id": "AAMkADx", "subject": "<script>alert(1)</script>", "isRead": True},
    )
    client.force_login(acme.member)
    page = client.get(reverse("graphsync:record", args=[record.pk])).text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\n  &quot;isRead&quot;: true,\n" in page


def test_another_members_records_are_404(client, acme, globex):
    job = make_job(acme)
    make_records(job, 1)
    record = Record.objects.get(job=job)
    colleague = make_user("acme-colleague", tenant=acme.tenant, role="member")
    for user in (globex.member, colleague, acme.admin):
        client.force_login(user)
        assert client.get(reverse("graphsync:record", args=[record.pk])).status_code == 404
        url = reverse("graphsync:records", args=[acme.connection.pk])
        assert client.get(url).status_code == 404


# --- with the emulator: what the engine really synced ----------------------------------------


@pytest.mark.django_db(transaction=True)
def test_after_a_real_sync_the_member_sees_counts_and_items(client, microsoft, contoso):
    adele = connected(client, microsoft, contoso.member, contoso.app)
    inbox = SyncJob.objects.get(connection=adele, resource=Resource.MAIL, folder="inbox")
    profile = SyncJob.objects.get(connection=adele, resource=Resource.PROFILE)
    for job in (inbox, profile):
        assert engine.run(job.pk).run.outcome == SyncRun.Outcome.SUCCEEDED
    live = Record.objects.filter(job=inbox, deleted_at__isnull=True).count()
    assert live > 0

    status = {entry["id"]: entry for entry in status_of(client, adele)["jobs"]}
    assert status[inbox.pk]["live"] == live and status[profile.pk]["live"] == 1
    assert status[inbox.pk]["last_outcome"] == "succeeded"
    page = client.get(reverse("connections:mine")).text
    assert re.search(rf'data-job="{inbox.pk}".*?data-field="live">{live}<', page, re.S)

    records = reverse("graphsync:records", args=[adele.pk])
    assert "Adele Vance" in client.get(records, {"resource": "profile"}).text
    record = Record.objects.get(job=profile)
    detail = client.get(reverse("graphsync:record", args=[record.pk])).text
    assert "&quot;userPrincipalName&quot;" in detail

    client.force_login(contoso.other)
    assert client.get(reverse("graphsync:record", args=[record.pk])).status_code == 404
