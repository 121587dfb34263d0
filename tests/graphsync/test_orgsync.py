"""Organisation-wide sync: an administrator's consent to application permissions gives every
user in scope the jobs a delegated connection gets, read as /users/{id}/… on the app-only
connection; people join and leave with the directory; one user's failure stays theirs, a
permission the whole app lacks pauses it once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from connections.models import AuditEvent, Connection
from graphsync import engine, orgsync, subscriptions
from graphsync.models import (
    OrgMember,
    OrgSync,
    Record,
    Resource,
    Subscription,
    SyncJob,
    SyncRun,
)
from tests.conftest import ADELE, ALEX, MS_CLIENT_ID, MS_TENANT
from tests.emulator.conftest import Receiver
from tests.flows import connected, follow_back

pytestmark = pytest.mark.django_db
DIEGO = "e2f3a4b5-c6d7-4e8f-9a0b-1c2d3e4f5a6c"  # no mailbox

ALL_ROLES = ["User.Read.All", "Group.Read.All", "Mail.Read", "Calendars.Read", "Contacts.Read",
             "Files.Read.All"]  # fmt: skip
PER_USER = {
    (Resource.MAIL, "inbox"),
    (Resource.MAIL, "sentitems"),
    (Resource.CALENDAR, ""),
    (Resource.CONTACTS, ""),
    (Resource.DRIVE, ""),
}


def consent(client, microsoft, contoso) -> Connection:
    client.force_login(contoso.admin)
    answer = client.post(reverse("connections:admin_consent", args=[contoso.app.pk]))
    follow_back(client, microsoft.control.sign_in(answer["Location"], ADELE))
    return Connection.objects.get(kind=Connection.Kind.APPLICATION)


def directory_job(connection, resource) -> SyncJob:
    return SyncJob.objects.get(connection=connection, mailbox="", resource=resource)


def sync_directory(connection) -> None:
    for resource in (Resource.USERS, Resource.GROUPS):
        run = engine.run(directory_job(connection, resource).pk).run
        assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error


def turn_on(connection, **settings) -> OrgSync:
    org = OrgSync.objects.create(
        connection=connection, tenant_id=connection.app.tenant_id, enabled=True, **settings
    )
    orgsync.reconcile(org.pk)
    return org


def jobs_of(connection, user) -> set[tuple[str, str]]:
    jobs = SyncJob.objects.filter(connection=connection, mailbox=user, enabled=True)
    return set(jobs.values_list("resource", "folder"))


def in_scope(org) -> set[str]:
    members = OrgMember.objects.filter(org=org, state=OrgMember.State.IN_SCOPE)
    return set(members.values_list("graph_id", flat=True))


@pytest.fixture
def app_only(client, microsoft, contoso):
    connection = consent(client, microsoft, contoso)
    sync_directory(connection)
    return connection


def test_the_app_only_token_tells_which_application_permissions_were_granted(app_only):
    assert sorted(app_only.granted_scopes.split()) == sorted(ALL_ROLES)
    assert set(orgsync.granted_resources(app_only)) == {
        Resource.MAIL,
        Resource.CALENDAR,
        Resource.CONTACTS,
        Resource.DRIVE,
    }


def test_every_user_in_scope_gets_the_jobs_of_a_delegated_connection(microsoft, app_only):
    org = turn_on(app_only)  # everyone with a mailbox
    assert in_scope(org) == {ADELE, ALEX}
    assert jobs_of(app_only, ADELE) == jobs_of(app_only, ALEX) == PER_USER
    assert not jobs_of(app_only, DIEGO)
    adele = OrgMember.objects.get(org=org, graph_id=ADELE)
    assert adele.user_principal_name == "adele.vance@contoso.example"

    # Alex's inbox, read through /users/{id}: exactly his messages, none of Adele's.
    inbox = SyncJob.objects.get(connection=app_only, mailbox=ALEX, resource=Resource.MAIL,
                                folder="inbox")  # fmt: skip
    run = engine.run(inbox.pk).run
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    stored = set(Record.objects.filter(job=inbox).values_list("graph_id", flat=True))
    listed = microsoft.control.items(ALEX, "messages", folder="inbox", limit=10_000)["ids"]
    assert stored == {item["id"] if isinstance(item, dict) else item for item in listed}
    inbox.refresh_from_db()
    assert f"/users/{ALEX}/mailFolders/inbox/messages/delta" in inbox.cursor

    # A second reconcile changes nothing.
    again = orgsync.reconcile(org.pk)
    assert again.jobs_created == 0 and not again.joined and not again.left


def test_a_user_connected_themselves_is_not_synced_twice_unless_wanted(
    client, microsoft, contoso, app_only
):
    connected(client, microsoft, contoso.member, contoso.app, user=ADELE)
    org = turn_on(app_only)
    assert in_scope(org) == {ALEX}
    OrgSync.objects.filter(pk=org.pk).update(alongside_delegated=True)
    orgsync.reconcile(org.pk)
    assert in_scope(org) == {ADELE, ALEX}


def test_group_scope_follows_membership_changes(microsoft, app_only):
    group = microsoft.control.add_group(MS_TENANT, display_name="Sales", members=[ADELE])
    sync_directory(app_only)
    org = turn_on(app_only, scope=OrgSync.Scope.GROUPS, groups=[group["id"]])
    assert in_scope(org) == {ADELE}

    microsoft.control.update_group(group["id"], members=[ADELE, ALEX])
    sync_directory(app_only)  # a delta round: members@delta carries only the change
    orgsync.reconcile(org.pk)
    assert in_scope(org) == {ADELE, ALEX}

    microsoft.control.update_group(group["id"], members=[ALEX])
    sync_directory(app_only)
    orgsync.reconcile(org.pk)
    assert in_scope(org) == {ALEX}
    adele = OrgMember.objects.get(org=org, graph_id=ADELE)
    assert adele.state == OrgMember.State.LEFT and adele.left_reason == orgsync.LEFT_SCOPE
    stopped = SyncJob.objects.filter(connection=app_only, mailbox=ADELE)
    assert stopped.count() == len(PER_USER)
    assert set(stopped.values_list("enabled", "disabled_reason")) == {(False, orgsync.LEFT_SCOPE)}

    # Back in the group: the same jobs come back, none twice.
    microsoft.control.update_group(group["id"], members=[ALEX, ADELE])
    sync_directory(app_only)
    assert orgsync.reconcile(org.pk).jobs_created == 0
    assert jobs_of(app_only, ADELE) == PER_USER


def test_a_directory_run_reconciles_through_a_task(
    microsoft, app_only, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr("core.queue.send", lambda task, *args, countdown=None: sent.append(
        (task, args)))  # fmt: skip
    org = turn_on(app_only)
    with django_capture_on_commit_callbacks(execute=True):
        engine.run(directory_job(app_only, Resource.USERS).pk)
    assert ("graphsync.tasks.reconcile_org", (org.pk,)) in sent


def test_a_deleted_user_leaves_with_their_jobs_and_records_as_chosen(microsoft, app_only):
    org = turn_on(app_only, retention=OrgSync.Retention.DELETE)
    inbox = SyncJob.objects.get(connection=app_only, mailbox=ALEX, resource=Resource.MAIL,
                                folder="inbox")  # fmt: skip
    engine.run(inbox.pk)
    assert Record.objects.filter(job=inbox, deleted_at__isnull=True).exists()

    microsoft.control.delete_user(ALEX)
    sync_directory(app_only)
    summary = orgsync.reconcile(org.pk)
    assert summary.left == [ALEX]
    alex = OrgMember.objects.get(org=org, graph_id=ALEX)
    assert alex.left_reason == orgsync.LEFT_DIRECTORY
    assert not jobs_of(app_only, ALEX)
    assert not Record.objects.filter(job=inbox, deleted_at__isnull=True).exists()
    assert jobs_of(app_only, ADELE) == PER_USER  # the others carry on


def test_a_disabled_account_leaves_and_comes_back_when_enabled(microsoft, app_only):
    org = turn_on(app_only)
    microsoft.control.update_user(ALEX, account_enabled=False)
    sync_directory(app_only)
    assert orgsync.reconcile(org.pk).left == [ALEX]
    assert OrgMember.objects.get(org=org, graph_id=ALEX).left_reason == orgsync.ACCOUNT_DISABLED
    assert not jobs_of(app_only, ALEX)

    microsoft.control.update_user(ALEX, account_enabled=True)
    sync_directory(app_only)
    assert orgsync.reconcile(org.pk).joined == [ALEX]
    assert jobs_of(app_only, ALEX) == PER_USER


@pytest.fixture
def receiver(settings, app_only):
    """Where Graph's validation handshakes and notifications go once the app is consented: a
    stub on loopback that echoes validation tokens (no database: the test's transaction stays
    the only writer)."""
    stub = Receiver()
    settings.PORTAL_BASE_URL = stub.url
    settings.MICROSOFT_ALLOW_HTTP = True
    yield stub
    stub.close()


def test_a_deleted_users_subscriptions_are_taken_down_at_microsoft(
    receiver, microsoft, app_only, django_capture_on_commit_callbacks, monkeypatch
):
    org = turn_on(app_only)
    inbox = SyncJob.objects.get(connection=app_only, mailbox=ALEX, resource=Resource.MAIL,
                                folder="inbox")  # fmt: skip
    assert subscriptions.ensure(inbox.pk) == "created"
    graph_id = Subscription.objects.get(job=inbox).graph_id
    assert (
        f"users/{ALEX}/mailFolders('inbox')/messages"
        == Subscription.objects.get(job=inbox).resource
    )
    sent = []
    monkeypatch.setattr("core.queue.send", lambda task, *args, countdown=None: sent.append(
        (task, args)))  # fmt: skip

    microsoft.control.delete_user(ALEX)
    sync_directory(app_only)
    with django_capture_on_commit_callbacks(execute=True):
        orgsync.reconcile(org.pk)
    assert ("graphsync.tasks.maintain_subscription", (inbox.pk,)) in sent
    assert subscriptions.ensure(inbox.pk) == "deleted"  # what that task does
    assert not Subscription.objects.filter(job=inbox).exists()
    live = {s["id"] for s in microsoft.control.subscriptions()["subscriptions"]}
    assert graph_id not in live


def test_a_user_without_a_mailbox_loses_only_their_own_mailbox_jobs(microsoft, app_only):
    turn_on(app_only, mailbox_only=False)
    assert jobs_of(app_only, DIEGO) == PER_USER
    diego_inbox = SyncJob.objects.get(connection=app_only, mailbox=DIEGO, resource=Resource.MAIL,
                                      folder="inbox")  # fmt: skip
    run = engine.run(diego_inbox.pk).run
    assert run.outcome == SyncRun.Outcome.FAILED and "MailboxNotEnabledForRESTAPI" in run.error
    assert jobs_of(app_only, DIEGO) == {(Resource.DRIVE, "")}  # his OneDrive carries on
    assert jobs_of(app_only, ADELE) == jobs_of(app_only, ALEX) == PER_USER


def test_a_permission_the_whole_app_lacks_pauses_it_once_with_one_notice(
    microsoft, contoso, app_only, django_capture_on_commit_callbacks
):
    org = turn_on(app_only)
    # The tenant's administrator revokes the consent and grants it again without Mail.Read:
    # the next app token no longer has it.
    microsoft.control.revoke_admin_consent(MS_TENANT, MS_CLIENT_ID)
    microsoft.control.grant_consent(
        MS_TENANT, MS_CLIENT_ID, scopes=[r for r in ALL_ROLES if r != "Mail.Read"]
    )
    Connection.objects.filter(pk=app_only.pk).update(
        access_token_expires_at=timezone.now() - timedelta(seconds=1)
    )
    mail.outbox.clear()
    inboxes = SyncJob.objects.filter(connection=app_only, resource=Resource.MAIL, folder="inbox")
    with django_capture_on_commit_callbacks(execute=True):
        outcomes = [engine.run(job.pk) for job in inboxes.order_by("mailbox")]
    assert outcomes[0].run.outcome == SyncRun.Outcome.FAILED
    assert outcomes[1].run is None  # stopped with the rest: no second failure
    org.refresh_from_db()
    assert org.paused_at is not None and "ErrorAccessDenied" in org.paused_reason
    assert not SyncJob.objects.filter(connection=app_only, enabled=True).exclude(mailbox="")
    assert len(mail.outbox) == 1
    assert "Organisation-wide sync of" in mail.outbox[0].subject
    assert contoso.admin.email in mail.outbox[0].to

    # Permission back, sync resumed: every user's jobs carry on.
    microsoft.control.grant_consent(MS_TENANT, MS_CLIENT_ID, scopes=ALL_ROLES)
    Connection.objects.filter(pk=app_only.pk).update(
        access_token_expires_at=timezone.now() - timedelta(seconds=1)
    )
    orgsync.resume(org, contoso.admin)
    assert jobs_of(app_only, ADELE) == jobs_of(app_only, ALEX) == PER_USER
    trail = AuditEvent.objects.filter(connection=app_only).order_by("pk")
    assert [e.kind for e in trail if e.kind.startswith("org_sync")] == [
        AuditEvent.Kind.ORG_SYNC_PAUSED,
        AuditEvent.Kind.ORG_SYNC_RESUMED,
    ]
    assert trail.get(kind=AuditEvent.Kind.ORG_SYNC_RESUMED).actor == contoso.admin


def test_a_mailbox_closed_to_the_app_stops_only_that_users_mailbox_jobs(microsoft, app_only):
    turn_on(app_only)
    microsoft.control.set_access_policy(MS_CLIENT_ID, deny=[ALEX])
    inbox = SyncJob.objects.get(connection=app_only, mailbox=ALEX, resource=Resource.MAIL,
                                folder="inbox")  # fmt: skip
    run = engine.run(inbox.pk).run
    assert run.outcome == SyncRun.Outcome.FAILED and "[RAOP]" in run.error
    assert jobs_of(app_only, ALEX) == {(Resource.DRIVE, "")}  # Exchange's policy: Outlook only
    stopped = SyncJob.objects.get(pk=inbox.pk)
    assert stopped.disabled_reason.startswith("The app may not read this user's mailbox")
    assert jobs_of(app_only, ADELE) == PER_USER
    assert OrgSync.objects.get(connection=app_only).paused_at is None
    adele = SyncJob.objects.get(connection=app_only, mailbox=ADELE, resource=Resource.MAIL,
                                folder="inbox")  # fmt: skip
    assert engine.run(adele.pk).run.outcome == SyncRun.Outcome.SUCCEEDED


def test_turning_it_off_stops_every_users_jobs_and_on_again_carries_on(app_only):
    org = turn_on(app_only, retention=OrgSync.Retention.DELETE)
    inbox = SyncJob.objects.get(connection=app_only, mailbox=ALEX, resource=Resource.MAIL,
                                folder="inbox")  # fmt: skip
    engine.run(inbox.pk)
    OrgSync.objects.filter(pk=org.pk).update(enabled=False)
    orgsync.reconcile(org.pk)
    assert not SyncJob.objects.filter(connection=app_only, enabled=True).exclude(mailbox="")
    assert directory_job(app_only, Resource.USERS).enabled  # the directory keeps syncing
    # Off is not leaving: nobody's records are deleted, their cursors are kept.
    assert in_scope(org) == {ADELE, ALEX}
    assert Record.objects.filter(job=inbox, deleted_at__isnull=True).exists()

    OrgSync.objects.filter(pk=org.pk).update(enabled=True)
    assert orgsync.reconcile(org.pk).jobs_created == 0
    assert jobs_of(app_only, ADELE) == jobs_of(app_only, ALEX) == PER_USER
    inbox.refresh_from_db()
    assert inbox.cursor_is_delta  # carries on from its delta link


def test_the_organisations_records_stay_off_member_pages_even_for_who_consented(
    client, contoso, app_only
):
    """The administrator who granted consent owns the app-only connection; made a plain member,
    they must not read the organisation's mail there: it is the admin's to see."""
    turn_on(app_only)
    inbox = SyncJob.objects.get(connection=app_only, mailbox=ALEX, resource=Resource.MAIL,
                                folder="inbox")  # fmt: skip
    engine.run(inbox.pk)
    record = Record.objects.filter(job=inbox).first()
    assert app_only.user == contoso.admin and record is not None
    client.force_login(contoso.admin)
    mine = client.get(reverse("connections:mine"))
    assert mine.status_code == 200 and "app-only" not in mine.text
    assert client.get(reverse("graphsync:records", args=[app_only.pk])).status_code == 404
    assert client.get(reverse("graphsync:record", args=[record.pk])).status_code == 404
