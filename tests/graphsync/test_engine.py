"""The sync engine against the emulator: initial syncs, deltas, resyncs, permissions."""

from __future__ import annotations

import pytest

from graphsync import engine
from graphsync.models import Record, Resource, SyncJob, SyncRun
from tests.conftest import ADELE
from tests.flows import connected

pytestmark = pytest.mark.django_db(transaction=True)
DIEGO = "e2f3a4b5-c6d7-4e8f-9a0b-1c2d3e4f5a6c"


@pytest.fixture
def adele(client, microsoft, contoso):
    return connected(client, microsoft, contoso.member, contoso.app)


def job_of(connection, resource, folder=""):
    return SyncJob.objects.get(connection=connection, resource=resource, folder=folder)


def live_ids(job) -> set[str]:
    return set(
        Record.objects.filter(job=job, deleted_at__isnull=True).values_list("graph_id", flat=True)
    )


def emulator_ids(microsoft, kind, folder=None) -> set[str]:
    listed = microsoft.control.items(ADELE, kind, folder=folder, limit=100_000)
    return {item["id"] if isinstance(item, dict) else item for item in listed["ids"]}


def small_pages(job, size=7):
    # The demo scenario's calendar lies around January 2025: a window wide enough to hold it.
    job.options = {"page_size": size, "days_back": 3650, "days_ahead": 3650}
    job.save(update_fields=["options"])


def test_a_connection_gets_the_jobs_its_scopes_allow(adele):
    jobs = set(SyncJob.objects.filter(connection=adele).values_list("resource", "folder"))
    assert jobs == {
        ("profile", ""),
        ("mail", "inbox"),
        ("mail", "sentitems"),
        ("calendar", ""),
        ("contacts", ""),
        ("drive", ""),
    }


@pytest.mark.parametrize(
    ("resource", "folder", "kind"),
    [
        (Resource.MAIL, "inbox", "messages"),
        (Resource.MAIL, "sentitems", "messages"),
        (Resource.CALENDAR, "", "events"),
        (Resource.CONTACTS, "", "contacts"),
        (Resource.DRIVE, "", "drive-items"),
    ],
)
def test_initial_sync_over_many_pages_gets_every_item(microsoft, adele, resource, folder, kind):
    job = job_of(adele, resource, folder)
    small_pages(job)
    outcome = engine.run(job.pk)
    run = outcome.run
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    expected = emulator_ids(microsoft, kind, folder or None)
    assert live_ids(job) == expected
    assert run.created == len(expected) and run.pages >= 2
    job.refresh_from_db()
    assert job.cursor_is_delta and "deltatoken" in job.cursor.lower() or "token" in job.cursor
    assert job.state == SyncJob.State.IDLE and job.lease_owner == ""


def test_profile(adele):
    job = job_of(adele, Resource.PROFILE)
    assert engine.run(job.pk).run.outcome == SyncRun.Outcome.SUCCEEDED
    record = Record.objects.get(job=job)
    assert record.graph_id == ADELE and record.title == "Adele Vance"


def test_incremental_delta_sees_adds_changes_and_deletions(microsoft, adele):
    job = job_of(adele, Resource.MAIL, "inbox")
    small_pages(job, 50)
    engine.run(job.pk)
    before = live_ids(job)
    added = microsoft.control.add_items(ADELE, "messages", count=3, folder="inbox")
    changed, gone = sorted(before)[:2]
    microsoft.control.update_item(ADELE, "messages", changed, subject="Changed subject")
    microsoft.control.delete_item(ADELE, "messages", gone)

    run = engine.run(job.pk).run
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert (run.created, run.updated, run.deleted) == (3, 1, 1)
    assert not run.full_resync
    assert live_ids(job) == (before | set(added)) - {gone}
    assert Record.objects.get(job=job, graph_id=changed).title == "Changed subject"
    deleted = Record.objects.get(job=job, graph_id=gone)
    assert deleted.deleted_at is not None  # soft: the row stays, with a timestamp
    job.refresh_from_db()
    assert job.live_count == len(live_ids(job))  # kept for pages that show it
    # Nothing changed: a run that only asks, and writes nothing.
    quiet = engine.run(job.pk).run
    assert (quiet.created, quiet.updated, quiet.deleted, quiet.requests) == (0, 0, 0, 1)


def test_onedrive_deletions_come_as_a_deleted_facet(microsoft, adele):
    job = job_of(adele, Resource.DRIVE)
    engine.run(job.pk)
    victim = sorted(live_ids(job))[0]
    microsoft.control.delete_item(ADELE, "drive-items", victim)
    run = engine.run(job.pk).run
    assert run.deleted == 1
    assert victim not in live_ids(job)


def test_expired_delta_token_resyncs_and_detects_deletions(microsoft, adele):
    job = job_of(adele, Resource.CONTACTS)
    small_pages(job, 10)
    engine.run(job.pk)
    before = live_ids(job)
    gone = sorted(before)[0]
    microsoft.control.delete_item(ADELE, "contacts", gone)
    microsoft.control.invalidate_delta(user=ADELE, resource="contacts")

    run = engine.run(job.pk).run
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert run.full_resync
    assert live_ids(job) == before - {gone}
    assert run.deleted == 1 and run.created == 0
    job.refresh_from_db()
    assert not job.resyncing and job.cursor_is_delta


def test_no_mailbox_disables_the_mailbox_jobs_and_keeps_the_connection(client, microsoft, contoso):
    diego = connected(client, microsoft, contoso.other, contoso.app, user=DIEGO)
    run = engine.run(job_of(diego, Resource.MAIL, "inbox").pk).run
    assert run.outcome == SyncRun.Outcome.FAILED
    states = dict(SyncJob.objects.filter(connection=diego).values_list("resource", "enabled"))
    assert states["mail"] is False and states["calendar"] is False
    assert states["contacts"] is False and states["drive"] is True
    diego.refresh_from_db()
    assert diego.status == "active"


def app_only_connection(client, microsoft, contoso):
    from django.urls import reverse

    from connections.models import Connection
    from tests.flows import follow_back

    client.force_login(contoso.admin)
    consent = client.post(reverse("connections:admin_consent", args=[contoso.app.pk]))
    follow_back(client, microsoft.control.sign_in(consent["Location"], ADELE))
    return Connection.objects.get(kind=Connection.Kind.APPLICATION)


def test_a_missing_permission_disables_that_job_only(client, microsoft, contoso):
    # The app was granted User.Read.All but not Group.Read.All.
    microsoft.control.update_app(
        "3c9e6d1a-52b4-4f7e-8a1d-6b0c2e9f4a17", application_permissions=["User.Read.All"]
    )
    app_only = app_only_connection(client, microsoft, contoso)
    groups = job_of(app_only, Resource.GROUPS)
    run = engine.run(groups.pk).run
    assert run.outcome == SyncRun.Outcome.FAILED
    groups.refresh_from_db()
    assert not groups.enabled and "Missing permission (Authorization_RequestDenied)" in (
        groups.disabled_reason
    )
    users = job_of(app_only, Resource.USERS)
    assert engine.run(users.pk).run.outcome == SyncRun.Outcome.SUCCEEDED
    assert SyncJob.objects.get(pk=users.pk).enabled


def test_directory_users_and_groups_with_an_app_only_connection(client, microsoft, contoso):
    from connections.models import Connection

    app_only = app_only_connection(client, microsoft, contoso)
    assert app_only.kind == Connection.Kind.APPLICATION
    users = job_of(app_only, Resource.USERS)
    groups = job_of(app_only, Resource.GROUPS)
    assert engine.run(users.pk).run.outcome == SyncRun.Outcome.SUCCEEDED
    assert engine.run(groups.pk).run.outcome == SyncRun.Outcome.SUCCEEDED
    assert ADELE in live_ids(users) and len(live_ids(users)) == 3
    assert Record.objects.get(job=groups).title == "All Company"
