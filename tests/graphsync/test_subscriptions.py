"""Subscriptions against the emulator: created with the handshake, renewed before they expire,
recreated when Microsoft loses them, deleted with their job or connection, shown in the admin."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import requests
from django.db import connection as db_connection
from django.urls import reverse
from django.utils import timezone

from graphsync import engine, scheduling, subscriptions
from graphsync.models import Resource, Subscription, SyncJob
from graphsync.resources import graph_datetime
from tests.flows import connected

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def adele(client, microsoft, contoso):
    return connected(client, microsoft, contoso.member, contoso.app)


@pytest.fixture
def inbox(adele) -> SyncJob:
    return SyncJob.objects.get(connection=adele, resource=Resource.MAIL, folder="inbox")


def at_microsoft(microsoft) -> dict[str, dict]:
    return {sub["id"]: sub for sub in microsoft.control.subscriptions()["subscriptions"]}


def test_a_subscription_passes_the_handshake_with_the_longest_lifetime(portal, microsoft, inbox):
    assert subscriptions.ensure(inbox.pk) == "created"

    sub = Subscription.objects.get(job=inbox)
    remote = at_microsoft(microsoft)[sub.graph_id]
    assert remote["resource"] == "me/mailFolders('inbox')/messages"
    assert remote["changeType"] == "created,updated,deleted"
    assert remote["notificationUrl"] == f"{portal}/graph/notifications/"
    assert remote["lifecycleNotificationUrl"] == f"{portal}/graph/lifecycle/"
    # The emulator validated both URLs against the live portal before creating it.
    validations = [
        d for d in microsoft.control.subscriptions()["deliveries"] if d["kind"] == "validation"
    ]
    assert [(d["url"], d["status"]) for d in validations] == [
        (f"{portal}/graph/notifications/", 200),
        (f"{portal}/graph/lifecycle/", 200),
    ]
    lifetime = graph_datetime(remote["expirationDateTime"]) - timezone.now()
    assert timedelta(minutes=10_080 - 5) < lifetime <= timedelta(minutes=10_080)
    assert abs(sub.expires_at - graph_datetime(remote["expirationDateTime"])) < timedelta(seconds=1)
    # The clientState is a secret of its own, stored encrypted.
    assert remote["clientState"] == sub.client_state and len(sub.client_state) >= 32
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT client_state FROM graphsync_subscription WHERE id = %s", [sub.pk])
        assert sub.client_state not in cursor.fetchone()[0]


def test_each_resource_subscribes_in_graphs_own_form(portal, microsoft, adele):
    expected = {
        Resource.CALENDAR: ("me/events", "created,updated,deleted"),
        Resource.CONTACTS: ("me/contacts", "created,updated,deleted"),
        Resource.DRIVE: ("me/drive/root", "updated"),
    }
    for resource, (path, changes) in expected.items():
        job = SyncJob.objects.get(connection=adele, resource=resource)
        assert subscriptions.ensure(job.pk) == "created", Subscription.objects.get(job=job)
        remote = at_microsoft(microsoft)[Subscription.objects.get(job=job).graph_id]
        assert (remote["resource"], remote["changeType"]) == (path, changes)
    profile = SyncJob.objects.get(connection=adele, resource=Resource.PROFILE)
    assert subscriptions.ensure(profile.pk) == "none wanted"


def test_beat_subscribes_every_watchable_job_only_when_the_portal_can_receive(
    portal, settings, adele
):
    watchable = set(
        SyncJob.objects.filter(connection=adele)
        .exclude(resource=Resource.PROFILE)
        .values_list("pk", flat=True)
    )
    assert set(subscriptions.due()) == watchable
    settings.PORTAL_BASE_URL = "http://portal.example"
    settings.MICROSOFT_ALLOW_HTTP = False
    assert subscriptions.due() == []


def test_a_failed_handshake_is_recorded_and_retried_later(settings, microsoft, inbox):
    settings.PORTAL_BASE_URL = "http://127.0.0.1:9"  # nobody answers there
    assert subscriptions.ensure(inbox.pk) == "failed"
    sub = Subscription.objects.get(job=inbox)
    assert sub.status == Subscription.Status.FAILED and "ValidationError" in sub.last_error
    assert sub.next_attempt_at > timezone.now() and inbox.pk not in subscriptions.due()
    # It says what the job does meanwhile: poll on its own interval, not the safety poll.
    assert sub.last_error.startswith("Could not subscribe, so the job polls every 15 minutes")
    assert scheduling.poll_interval(inbox) == inbox.interval_seconds


def test_renewal_before_expiry_extends_the_subscription(portal, microsoft, inbox):
    subscriptions.ensure(inbox.pk)
    assert inbox.pk not in subscriptions.due()  # seven days left: nothing to do yet
    sub = Subscription.objects.get(job=inbox)
    soon = timezone.now() + timedelta(hours=2)
    Subscription.objects.filter(pk=sub.pk).update(expires_at=soon)
    assert inbox.pk in subscriptions.due()

    assert subscriptions.ensure(inbox.pk) == "renewed"
    renewed = Subscription.objects.get(pk=sub.pk)
    assert renewed.graph_id == sub.graph_id and renewed.expires_at > soon + timedelta(days=6)
    remote = at_microsoft(microsoft)[sub.graph_id]
    assert graph_datetime(remote["expirationDateTime"]) > timezone.now() + timedelta(days=6)
    renewals = [r for r in microsoft.control.requests(host="graph") if r["method"] == "PATCH"]
    assert len(renewals) == 1


def test_a_subscription_microsoft_lost_is_recreated_at_renewal(portal, microsoft, adele, inbox):
    subscriptions.ensure(inbox.pk)
    lost = Subscription.objects.get(job=inbox)
    requests.delete(
        f"{microsoft.graph_url}/v1.0/subscriptions/{lost.graph_id}",
        headers={"Authorization": f"Bearer {adele.access_token}"},
        timeout=10,
    ).raise_for_status()
    Subscription.objects.filter(pk=lost.pk).update(expires_at=timezone.now() + timedelta(hours=1))

    assert subscriptions.ensure(inbox.pk) == "recreated (created)"
    sub = Subscription.objects.get(job=inbox)
    assert sub.graph_id != lost.graph_id and sub.status == Subscription.Status.ACTIVE
    assert list(at_microsoft(microsoft)) == [sub.graph_id]


def test_disabling_a_job_deletes_its_subscription(portal, microsoft, inbox):
    subscriptions.ensure(inbox.pk)
    inbox.disable("not wanted")
    assert inbox.pk in subscriptions.due()
    assert subscriptions.ensure(inbox.pk) == "deleted"
    assert not Subscription.objects.exists() and at_microsoft(microsoft) == {}


def test_disconnecting_deletes_the_subscriptions_at_microsoft(client, portal, microsoft, adele):
    for job in SyncJob.objects.filter(connection=adele, resource__in=["mail", "calendar"]):
        subscriptions.ensure(job.pk)
    assert len(at_microsoft(microsoft)) == 3

    response = client.post(reverse("connections:disconnect", args=[adele.pk]))
    assert response.status_code == 200
    assert at_microsoft(microsoft) == {}
    assert not Subscription.objects.exists()


def test_polling_relaxes_while_a_subscription_is_active(portal, settings, microsoft, inbox):
    assert engine.run(inbox.pk).run.error == ""
    inbox.refresh_from_db()
    assert inbox.next_run_at - timezone.now() <= timedelta(seconds=inbox.interval_seconds)

    subscriptions.ensure(inbox.pk)
    engine.run(inbox.pk)
    inbox.refresh_from_db()
    safety = timedelta(seconds=settings.GRAPH_SAFETY_POLL_SECONDS)
    assert safety - timedelta(minutes=1) < inbox.next_run_at - timezone.now() <= safety

    # Once it is gone, the job is back on its own interval at once.
    inbox.disable("paused")
    subscriptions.ensure(inbox.pk)
    inbox.refresh_from_db()
    assert inbox.next_run_at - timezone.now() <= timedelta(seconds=inbox.interval_seconds)


def test_admin_lists_subscriptions_and_renews_now(client, portal, microsoft, contoso, inbox):
    subscriptions.ensure(inbox.pk)
    sub = Subscription.objects.get(job=inbox)
    before = sub.renewed_at
    client.force_login(contoso.admin)
    url = reverse("admin:graphsync_subscription_changelist")
    page = client.get(url)
    assert page.status_code == 200
    assert "me/mailFolders(&#x27;inbox&#x27;)/messages" in page.content.decode()
    assert sub.client_state not in page.content.decode()
    detail = client.get(reverse("admin:graphsync_subscription_change", args=[sub.pk]))
    assert sub.graph_id in detail.content.decode()
    assert sub.client_state not in detail.content.decode()

    time.sleep(0.01)
    response = client.post(url, {"action": "renew_now", "_selected_action": [sub.pk]}, follow=True)
    assert "renewed: 1" in response.content.decode()
    assert Subscription.objects.get(pk=sub.pk).renewed_at > before


def test_another_tenants_admin_sees_no_subscription(client, portal, acme, inbox):
    subscriptions.ensure(inbox.pk)
    client.force_login(acme.admin)
    page = client.get(reverse("admin:graphsync_subscription_changelist"))
    assert page.status_code == 200 and "mailFolders" not in page.content.decode()
    sub = Subscription.objects.get(job=inbox)
    other = client.get(reverse("admin:graphsync_subscription_change", args=[sub.pk]))
    assert other.status_code == 404
