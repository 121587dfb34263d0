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
