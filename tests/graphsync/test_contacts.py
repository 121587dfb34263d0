"""Contacts sync per folder, as Graph documents contact delta (docs/microsoft.md, "Delta and
resync"): the default folder found by id, named folders, and jobs that synced the folder-less way
before."""

from __future__ import annotations

import pytest
from django.urls import reverse

from graphsync import engine, subscriptions
from graphsync.models import MAILBOX_RESOURCES, Record, Resource, Subscription, SyncJob, SyncRun
from graphsync.resources import DEFAULT_FOLDER_ID
from tests.conftest import ADELE
from tests.flows import connected, follow_back

pytestmark = pytest.mark.django_db(transaction=True)
DIEGO = "e2f3a4b5-c6d7-4e8f-9a0b-1c2d3e4f5a6c"  # no Exchange Online mailbox in the demo


@pytest.fixture
def adele(client, microsoft, contoso):
    return connected(client, microsoft, contoso.member, contoso.app)


def contacts_job(connection, folder="") -> SyncJob:
    return SyncJob.objects.get(connection=connection, resource=Resource.CONTACTS, folder=folder)


def live_ids(job) -> set[str]:
    return set(
        Record.objects.filter(job=job, deleted_at__isnull=True).values_list("graph_id", flat=True)
    )


def contact_ids(microsoft, user, folder=None) -> set[str]:
    return set(microsoft.control.items(user, "contacts", folder=folder, limit=10_000)["ids"])


def graph_paths(microsoft) -> list[str]:
    return [r["path"].split("?")[0].lower() for r in microsoft.control.requests(host="graph")]


def new_user(microsoft, client, contoso, upn, data):
    user = microsoft.control.add_user("contoso.example", upn=upn, data=data)
    return connected(client, microsoft, contoso.other, contoso.app, user=user["id"]), user["id"]


def test_contacts_sync_per_folder_against_a_microsoft_that_follows_its_documentation(
    microsoft, adele
):
    default = microsoft.control.add_contact_folder(ADELE, "Suppliers", count=2)["default_folder_id"]
    job = contacts_job(adele)
    run = engine.run(job.pk).run
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert live_ids(job) == contact_ids(microsoft, ADELE)  # the default folder's 25, no more
    job.refresh_from_db()
    assert job.options[DEFAULT_FOLDER_ID] == default
    assert job.cursor_is_delta and f"/contactFolders/{default}/contacts/delta" in job.cursor
    assert "/v1.0/me/contacts/delta" not in graph_paths(microsoft)

    added = microsoft.control.add_items(ADELE, "contacts", count=2)
    run = engine.run(job.pk).run
    assert (run.outcome, run.created, run.full_resync) == (SyncRun.Outcome.SUCCEEDED, 2, False)
    assert set(added) <= live_ids(job)


def test_the_default_folder_is_found_through_a_subfolder_when_it_holds_no_contact(
    client, microsoft, contoso
):
    connection, user = new_user(
        microsoft,
        client,
        contoso,
        "megan.bowen@contoso.example",
        {"contacts": 0, "contact_folders": {"Family": 3}},
    )
    job = contacts_job(connection)
    run = engine.run(job.pk).run
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert live_ids(job) == set()
    job.refresh_from_db()
    assert job.cursor_is_delta and job.options[DEFAULT_FOLDER_ID] in job.cursor
    added = microsoft.control.add_items(user, "contacts", count=1)
    assert engine.run(job.pk).run.created == 1 and live_ids(job) == set(added)


def test_an_empty_default_folder_reads_nothing_and_looks_again_next_run(client, microsoft, contoso):
    connection, user = new_user(
        microsoft, client, contoso, "lee.gu@contoso.example", {"contacts": 0}
    )
    job = contacts_job(connection)
    run = engine.run(job.pk).run
    assert (run.outcome, run.created) == (SyncRun.Outcome.SUCCEEDED, 0), run.error
    job.refresh_from_db()
    assert job.cursor == "" and DEFAULT_FOLDER_ID not in job.options

    added = microsoft.control.add_items(user, "contacts", count=2)
    run = engine.run(job.pk).run
    assert (run.outcome, run.created) == (SyncRun.Outcome.SUCCEEDED, 2), run.error
    job.refresh_from_db()
    assert live_ids(job) == set(added) and job.cursor_is_delta
    assert job.options[DEFAULT_FOLDER_ID] in job.cursor


def test_a_user_without_a_mailbox_ends_the_contacts_run_as_no_mailbox(client, microsoft, contoso):
    diego = connected(client, microsoft, contoso.other, contoso.app, user=DIEGO)
    run = engine.run(contacts_job(diego).pk).run
    assert run.outcome == SyncRun.Outcome.FAILED and "MailboxNotEnabledForRESTAPI" in run.error
    mailbox = SyncJob.objects.filter(connection=diego, resource__in=MAILBOX_RESOURCES)
    assert not mailbox.filter(enabled=True).exists()


def test_a_named_contact_folder_syncs_its_own_contacts_and_is_watched(portal, microsoft, adele):
    folder = microsoft.control.add_contact_folder(ADELE, "Suppliers", count=4)["id"]
    job = SyncJob.objects.create(
        connection=adele, tenant_id=adele.app.tenant_id, resource=Resource.CONTACTS, folder=folder
    )
    run = engine.run(job.pk).run
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert live_ids(job) == contact_ids(microsoft, ADELE, folder) and len(live_ids(job)) == 4

    assert subscriptions.ensure(job.pk) == "created"
    sub = Subscription.objects.get(job=job)
    assert sub.resource == f"me/contactFolders('{folder}')/contacts"
    microsoft.control.add_items(ADELE, "contacts", folder=folder)
    microsoft.control.add_items(ADELE, "contacts")  # the default folder: not this job's
    changes = [
        d
        for d in microsoft.control.subscriptions()["deliveries"]
        if d["kind"] == "change" and sub.graph_id in d["subscription_ids"]
    ]
    assert len(changes) == 1


def test_a_job_on_the_folderless_delta_link_restarts_on_its_folder_when_reconnected(
    client, microsoft, contoso, adele
):
    job = contacts_job(adele)
    engine.run(job.pk)
    records = dict(Record.objects.filter(job=job).values_list("graph_id", "pk"))
    # What a job synced before contacts went per folder holds: the folder-less delta link.
    SyncJob.objects.filter(pk=job.pk).update(
        cursor=f"{microsoft.graph_url}/v1.0/me/contacts/delta?$deltatoken=before",
        cursor_is_delta=True,
    )
    stuck = engine.run(job.pk).run
    assert stuck.outcome == SyncRun.Outcome.FAILED
    assert "Change tracking is not supported" in stuck.error

    client.force_login(contoso.member)
    response = client.post(reverse("connections:reconnect", args=[adele.pk]))
    outcome = microsoft.control.sign_in(response["Location"], ADELE)
    assert follow_back(client, outcome).status_code == 302
    run = engine.run(job.pk).run
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert run.full_resync and (run.created, run.deleted) == (0, 0)
    assert dict(Record.objects.filter(job=job).values_list("graph_id", "pk")) == records
    assert live_ids(job) == contact_ids(microsoft, ADELE)
    job.refresh_from_db()
    assert "/contactFolders/" in job.cursor and job.cursor_is_delta
