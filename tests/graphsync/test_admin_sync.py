"""Sync jobs, runs and records in the admin: tenant scoping, job controls, records at scale."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from connections.models import Connection
from graphsync import engine
from graphsync.admin.jobs import SyncJobAdmin
from graphsync.admin.records import CappedCountPaginator
from graphsync.models import Record, Resource, SyncJob, SyncRun
from tests.flows import connected

pytestmark = pytest.mark.django_db


def make_job(world, resource=Resource.MAIL, folder="inbox", connection=None, **fields):
    return SyncJob.objects.create(
        connection=connection or world.connection,
        tenant=world.tenant,
        resource=resource,
        folder=folder,
        **fields,
    )


def make_records(job, count, start=0, **fields):
    Record.objects.bulk_create(
        [
            Record(
                job=job,
                connection_id=job.connection_id,
                tenant_id=job.tenant_id,
                resource=job.resource,
                graph_id=f"AAMkAD{job.pk}-{i}",
                title=f"Quarterly report {i}",
                data={"id": f"AAMkAD{job.pk}-{i}", "subject": f"Quarterly report {i}"},
                **fields,
            )
            for i in range(start, start + count)
        ]
    )


def make_run(job, **fields):
    return SyncRun.objects.create(job=job, tenant_id=job.tenant_id, trigger="schedule", **fields)


@pytest.fixture
def rows(acme, globex):
    """Per tenant: a job with a run and a record."""
    made = {}
    for world in (acme, globex):
        job = make_job(world)
        make_records(job, 1)
        made[world.tenant.name] = {
            "syncjob": job,
            "syncrun": make_run(job, pages=3, created=42),
            "record": Record.objects.get(job=job),
        }
    return made


def change_url(obj, view="change"):
    return reverse(f"admin:graphsync_{obj._meta.model_name}_{view}", args=[obj.pk])


def run_action(client, action, *jobs):
    return client.post(
        reverse("admin:graphsync_syncjob_changelist"),
        {"action": action, "_selected_action": [job.pk for job in jobs]},
        follow=True,
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- tenant isolation ------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["syncjob", "syncrun", "record"])
def test_lists_show_only_own_tenants_rows(client, acme, rows, model):
    client.force_login(acme.admin)
    response = client.get(reverse(f"admin:graphsync_{model}_changelist"))
    assert response.status_code == 200
    assert change_url(rows["Acme"][model]) in response.text
    assert change_url(rows["Globex"][model]) not in response.text
    assert "Globex" not in response.text


@pytest.mark.parametrize("model", ["syncjob", "syncrun", "record"])
@pytest.mark.parametrize("view", ["change", "history", "delete"])
def test_other_tenants_rows_by_url_are_404(client, acme, rows, model, view):
    client.force_login(acme.admin)
    url = change_url(rows["Globex"][model], view)
    assert client.get(url).status_code in (403, 404)
    assert client.post(url, {"post": "yes", "interval_seconds": 60}).status_code in (403, 404)
    assert SyncJob.objects.get(pk=rows["Globex"]["syncjob"].pk).interval_seconds == 900
    assert Record.objects.filter(pk=rows["Globex"]["record"].pk).exists()


def test_actions_cannot_reach_other_tenants_jobs(client, acme, rows):
    client.force_login(acme.admin)
    theirs = rows["Globex"]["syncjob"]
    run_action(client, "disable_jobs", theirs)
    assert SyncJob.objects.get(pk=theirs.pk).enabled


def test_filtering_by_another_tenants_connection_shows_nothing(client, acme, globex, rows):
    client.force_login(acme.admin)
    url = reverse("admin:graphsync_record_changelist")
    response = client.get(url, {"connection__id__exact": globex.connection.pk})
    assert response.status_code == 200
    assert change_url(rows["Globex"]["record"]) not in response.text


def test_operator_sees_every_tenant_and_filters_by_tenant(client, operator, acme, rows):
    client.force_login(operator)
    url = reverse("admin:graphsync_syncjob_changelist")
    everything = client.get(url).text
    assert change_url(rows["Acme"]["syncjob"]) in everything
    assert change_url(rows["Globex"]["syncjob"]) in everything
    only_acme = client.get(url, {"tenant__id__exact": acme.tenant.pk}).text
    assert change_url(rows["Globex"]["syncjob"]) not in only_acme


def test_tenant_filter_is_for_operators_only(client, acme, rows):
    client.force_login(acme.admin)
    response = client.get(reverse("admin:graphsync_record_changelist"))
    assert "tenant__id__exact" not in response.text


def test_jobs_are_neither_added_nor_deleted_in_the_admin(client, acme, operator, rows):
    job = rows["Acme"]["syncjob"]
    for user in (acme.admin, operator):
        client.force_login(user)
        assert client.get(reverse("admin:graphsync_syncjob_add")).status_code == 403
        client.post(change_url(job, "delete"), {"post": "yes"})
        assert SyncJob.objects.filter(pk=job.pk).exists()


def test_runs_and_records_are_read_only(client, acme, rows):
    client.force_login(acme.admin)
    record = rows["Acme"]["record"]
    assert client.post(change_url(record), {"title": "Rewritten"}).status_code == 403
    assert Record.objects.get(pk=record.pk).title == record.title
    assert 'name="_save"' not in client.get(change_url(record)).text
    assert client.get(reverse("admin:graphsync_syncrun_add")).status_code == 403


# --- jobs: list, page and actions ------------------------------------------------------------


def test_job_list_shows_state_schedule_and_error(client, acme):
    make_job(
        acme,
        state=SyncJob.State.FAILING,
        failure_streak=3,
        last_error="Graph answered 500 InternalServerError twice",
    )
    client.force_login(acme.admin)
    page = client.get(reverse("admin:graphsync_syncjob_changelist")).text
    assert "Failing (retrying)" in page
    assert "Graph answered 500 InternalServerError" in page
    assert "member@acme.example" in page


def test_job_search_by_upn_and_graph_object_id(client, acme, globex, rows):
    client.force_login(acme.admin)
    url = reverse("admin:graphsync_syncjob_changelist")
    job = rows["Acme"]["syncjob"]
    assert change_url(job) in client.get(url, {"q": "member@acme"}).text
    assert change_url(job) in client.get(url, {"q": acme.connection.ms_object_id}).text
    assert change_url(job) not in client.get(url, {"q": "nobody@acme"}).text


def test_job_page_truncates_the_cursor_and_keeps_it_read_only(client, acme):
    cursor = "https://graph.microsoft.com/v1.0/me/mailFolders/inbox/messages/delta?$deltatoken=" + (
        "x" * 400
    )
    job = make_job(acme, cursor=cursor, cursor_is_delta=True)
    client.force_login(acme.admin)
    page = client.get(change_url(job)).text
    assert "x" * 400 not in page
    assert f"{len(cursor)} characters" in page and "delta link" in page
    assert 'name="cursor"' not in page


def test_run_now_queues_a_manual_run(client, acme, monkeypatch, django_capture_on_commit_callbacks):
    queued = []
    monkeypatch.setattr("core.queue.send", lambda task, *args, countdown=None: queued.append(args))
    job = make_job(acme, next_run_at=timezone.now() + timedelta(hours=1))
    client.force_login(acme.admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(client, "run_now", job)
    assert "1 job(s) queued to run now." in messages_of(response)
    assert queued == [(job.pk, "manual")]
    assert SyncJob.objects.get(pk=job.pk).next_run_at <= timezone.now()


def test_run_now_skips_disabled_jobs_and_says_so(
    client, acme, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr("core.queue.send", lambda task, *args, countdown=None: queued.append(args))
    job = make_job(acme, enabled=False, state=SyncJob.State.DISABLED)
    client.force_login(acme.admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(client, "run_now", job)
    assert "1 disabled job(s) not run: enable them first." in messages_of(response)
    assert queued == []


def test_full_resync_forgets_the_cursor_and_queues_a_resync(
    client, acme, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr("core.queue.send", lambda task, *args, countdown=None: queued.append(args))
    job = make_job(acme, cursor="https://graph/delta?$deltatoken=abc", cursor_is_delta=True)
    client.force_login(acme.admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(client, "full_resync", job)
    assert any("1 job(s) reset" in m for m in messages_of(response))
    job.refresh_from_db()
    assert job.cursor == "" and not job.cursor_is_delta
    assert queued == [(job.pk, "resync")]


def test_disable_then_enable(client, acme):
    job = make_job(acme, failure_streak=4, last_error="boom")
    client.force_login(acme.admin)
    response = run_action(client, "disable_jobs", job)
    assert "1 job(s) disabled." in messages_of(response)
    job.refresh_from_db()
    assert not job.enabled and job.state == SyncJob.State.DISABLED
    assert job.disabled_reason == "Disabled by acme-admin in the admin."

    response = run_action(client, "enable_jobs", job)
    assert "1 job(s) enabled, due now." in messages_of(response)
    job.refresh_from_db()
    assert job.enabled and job.state == SyncJob.State.IDLE
    assert job.disabled_reason == "" and job.failure_streak == 0


def change_form(job, **values):
    """What the job page posts: its editable fields and the recent-runs inline as shown."""
    recent = list(job.runs.all()[:10])
    data = {
        "interval_seconds": job.interval_seconds,
        "options": "{}",
        "runs-TOTAL_FORMS": len(recent),
        "runs-INITIAL_FORMS": len(recent),
        "runs-MIN_NUM_FORMS": 0,
        "runs-MAX_NUM_FORMS": 0,
    }
    if job.enabled:
        data["enabled"] = "on"
    for i, run in enumerate(recent):
        data[f"runs-{i}-id"] = run.pk
        data[f"runs-{i}-job"] = job.pk
    data.update(values)
    return {key: value for key, value in data.items() if value is not None}


def test_interval_and_options_change_and_nothing_else(client, acme):
    job = make_job(acme, cursor="https://graph/delta?$deltatoken=kept", cursor_is_delta=True)
    for _ in range(12):
        make_run(job)
    client.force_login(acme.admin)
    response = client.post(
        change_url(job),
        change_form(
            job,
            interval_seconds=3600,
            options='{"page_size": 25}',
            cursor="https://evil.example/",
            folder="deleteditems",
        ),
    )
    assert response.status_code == 302, response.context["errors"]
    job.refresh_from_db()
    assert job.interval_seconds == 3600 and job.options == {"page_size": 25}
    assert job.cursor == "https://graph/delta?$deltatoken=kept" and job.folder == "inbox"


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"interval_seconds": 5}, "greater than or equal to 60"),
        ({"options": "[1, 2]"}, "Options are a JSON object"),
    ],
)
def test_job_form_refuses_a_hammering_interval_and_odd_options(client, acme, values, error):
    job = make_job(acme)
    client.force_login(acme.admin)
    response = client.post(change_url(job), change_form(job, **values))
    assert response.status_code == 200 and error in response.text
    job.refresh_from_db()
    assert job.interval_seconds == 900 and job.options == {}


def test_saving_the_form_does_not_undo_a_workers_progress(client, acme, monkeypatch):
    job = make_job(acme)
    loaded = SyncJobAdmin.get_object

    def loaded_then_a_worker_commits_a_page(self, *args, **kwargs):
        obj = loaded(self, *args, **kwargs)
        SyncJob.objects.filter(pk=obj.pk).update(cursor="https://graph/next-page", generation=7)
        return obj

    monkeypatch.setattr(SyncJobAdmin, "get_object", loaded_then_a_worker_commits_a_page)
    client.force_login(acme.admin)
    assert client.post(change_url(job), change_form(job, interval_seconds=1800)).status_code == 302
    job.refresh_from_db()
    assert job.interval_seconds == 1800
    assert job.cursor == "https://graph/next-page" and job.generation == 7


def test_unticking_enabled_disables_with_a_reason(client, acme):
    job = make_job(acme)
    client.force_login(acme.admin)
    assert client.post(change_url(job), change_form(job, enabled=None)).status_code == 302
    job.refresh_from_db()
    assert not job.enabled and job.state == SyncJob.State.DISABLED
    assert "Disabled by acme-admin" in job.disabled_reason


def test_job_page_lists_the_last_ten_runs(client, acme):
    job = make_job(acme)
    runs = [make_run(job, started_at=timezone.now() - timedelta(minutes=i)) for i in range(12)]
    client.force_login(acme.admin)
    page = client.get(change_url(job)).text
    shown = set(re.findall(r"/admin/graphsync/syncrun/(\d+)/change/", page))
    assert shown == {str(run.pk) for run in runs[:10]}
    assert f"job__id__exact={job.pk}" in page  # links to all runs and the records


def test_run_list_and_page_show_all_figures(client, acme):
    job = make_job(acme)
    run = make_run(
        job,
        outcome=SyncRun.Outcome.DEFERRED,
        finished_at=timezone.now(),
        pages=4,
        requests=9,
        created=150,
        updated=7,
        deleted=2,
        throttled=3,
        seconds_waited=12.5,
        error="Throttled (concurrency on mailbox): continuing in 12.5 s.",
        worker="host:1234:abcd",
    )
    client.force_login(acme.admin)
    listing = client.get(reverse("admin:graphsync_syncrun_changelist"), {"outcome": "deferred"})
    assert "Deferred (throttled, re-enqueued)" in listing.text and "150" in listing.text
    page = client.get(change_url(run)).text
    for figure in ("host:1234:abcd", "12.5", "Throttled (concurrency on mailbox)"):
        assert figure in page


# --- records ---------------------------------------------------------------------------------


@pytest.fixture
def two_mailboxes(acme):
    """Two connections of one tenant, each with a mail job: a few live and a deleted record."""
    other = Connection.objects.create(
        app=acme.app,
        user=acme.admin,
        ms_tenant_id=acme.connection.ms_tenant_id,
        ms_object_id="22222222-2222-4222-8222-222222222222",
        user_principal_name="boss@acme.example",
    )
    first, second = make_job(acme), make_job(acme, connection=other)
    make_records(first, 3)
    make_records(second, 2)
    Record.objects.filter(job=first, graph_id=f"AAMkAD{first.pk}-0").update(
        deleted_at=timezone.now()
    )
    return first, second


def record_links(response) -> set[int]:
    return {int(pk) for pk in re.findall(r"/admin/graphsync/record/(\d+)/change/", response.text)}


def ids(**filters) -> set[int]:
    return set(Record.objects.filter(**filters).values_list("pk", flat=True))


def test_records_filter_by_connection_resource_and_deleted(client, acme, two_mailboxes):
    first, second = two_mailboxes
    client.force_login(acme.admin)
    url = reverse("admin:graphsync_record_changelist")
    by_connection = client.get(url, {"connection__id__exact": second.connection_id})
    assert by_connection.status_code == 200
    assert record_links(by_connection) == ids(connection=second.connection_id)
    deleted = client.get(url, {"deleted": "yes"})
    assert record_links(deleted) == ids(deleted_at__isnull=False)
    live = client.get(url, {"deleted": "no", "connection__id__exact": first.connection_id})
    assert record_links(live) == ids(job=first, deleted_at__isnull=True)
    assert record_links(client.get(url, {"resource": "calendar"})) == set()
    assert record_links(client.get(url, {"job__id__exact": first.pk})) == ids(job=first)


def test_records_search_by_subject_and_exact_graph_id(client, acme, two_mailboxes):
    first, _ = two_mailboxes
    client.force_login(acme.admin)
    url = reverse("admin:graphsync_record_changelist")
    by_subject = client.get(url, {"q": "quarterly REPORT 1"})
    assert record_links(by_subject) == ids(title__endswith="report 1")
    graph_id = f"AAMkAD{first.pk}-2"
    assert record_links(client.get(url, {"q": graph_id})) == ids(graph_id=graph_id)
    # The Graph id is matched whole: a fragment finds nothing (no scan of the index).
    assert record_links(client.get(url, {"q": graph_id[:-2]})) == set()


def test_record_json_is_pretty_printed_and_escaped(client, acme):
    job = make_job(acme)
    record = Record.objects.create(
        job=job,
        connection=acme.connection,
        tenant=acme.tenant,
        resource=job.resource,
        graph_id="AAMkADscript",
        title="<script>alert('title')</script>",
        data={"id": "AAMkADscript", "subject": "<script>alert(1)</script>", "isRead": False},
    )
    client.force_login(acme.admin)
    page = client.get(change_url(record)).text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\n  &quot;isRead&quot;: false,\n  &quot;subject&quot;: " in page
    listing = client.get(reverse("admin:graphsync_record_changelist")).text
    assert "<script>alert" not in listing and "&lt;script&gt;alert(" in listing


@pytest.mark.parametrize("persona", ["admin", "operator"])
def test_record_list_queries_do_not_grow_with_rows(
    client, acme, operator, persona, django_assert_max_num_queries
):
    client.force_login(operator if persona == "operator" else acme.admin)
    job = make_job(acme)
    make_records(job, 10)
    url = reverse("admin:graphsync_record_changelist")
    with CaptureQueriesContext(db_connection) as few:
        assert client.get(url).status_code == 200
    make_records(job, 190, start=10)
    with django_assert_max_num_queries(len(few)):
        page = client.get(url)
    assert len(record_links(page)) == 50
    assert "_facets" not in page.text  # no "Show counts" over millions of rows
    counts = [q["sql"] for q in few.captured_queries if "COUNT(" in q["sql"].upper()]
    assert all("LIMIT" in sql.upper() for sql in counts), counts  # never an unbounded count


@pytest.mark.parametrize("persona", ["admin", "operator"])
def test_job_list_queries_do_not_grow_with_rows(
    client, acme, operator, persona, django_assert_max_num_queries
):
    client.force_login(operator if persona == "operator" else acme.admin)
    make_job(acme)
    url = reverse("admin:graphsync_syncjob_changelist")
    with CaptureQueriesContext(db_connection) as few:
        assert client.get(url).status_code == 200
    for number in range(30):
        make_job(acme, folder=f"folder-{number}")
    with django_assert_max_num_queries(len(few)):
        assert client.get(url).status_code == 200


def test_record_count_stops_at_the_cap(client, acme, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "CAP", 5)
    job = make_job(acme)
    make_records(job, 8)
    client.force_login(acme.admin)
    page = client.get(reverse("admin:graphsync_record_changelist")).text
    assert "More than 5 records" in page


# --- the connection page ---------------------------------------------------------------------


def test_connection_page_lists_its_jobs_with_links(client, acme, rows):
    job = rows["Acme"]["syncjob"]
    SyncJob.objects.filter(pk=job.pk).update(last_error="Mailbox is on hold")
    client.force_login(acme.admin)
    page = client.get(reverse("admin:connections_connection_change", args=[acme.connection.pk]))
    assert change_url(job) in page.text
    assert "Mailbox is on hold" in page.text
    assert f"record/?connection__id__exact={acme.connection.pk}" in page.text
    assert f"syncjob/?connection__id__exact={acme.connection.pk}" in page.text


# --- with the emulator: records the engine really wrote -------------------------------------


@pytest.mark.django_db(transaction=True)
def test_synced_mail_is_searchable_by_subject_in_the_admin(client, microsoft, contoso):
    adele = connected(client, microsoft, contoso.member, contoso.app)
    job = SyncJob.objects.get(connection=adele, resource=Resource.MAIL, folder="inbox")
    assert engine.run(job.pk).run.outcome == SyncRun.Outcome.SUCCEEDED
    record = Record.objects.filter(job=job).exclude(title="").order_by("pk").first()
    client.force_login(contoso.admin)
    url = reverse("admin:graphsync_record_changelist")
    found = client.get(url, {"q": record.title, "connection__id__exact": adele.pk})
    assert record.pk in record_links(found)
    assert record.pk in record_links(client.get(url, {"q": record.graph_id}))
    detail = client.get(change_url(record)).text
    assert "&quot;receivedDateTime&quot;" in detail
