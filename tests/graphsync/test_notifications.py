"""Change notifications end to end: the emulator's changes reach the live portal, which checks
them and starts one delta run per job in a real worker; lifecycle events renew, recreate and
catch up; what does not check out is dropped."""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

import orjson
import pytest
import redis
from django.conf import settings as django_settings
from django.urls import reverse
from django.utils import timezone

from core import keys
from graphsync import engine, scheduling, subscriptions
from graphsync.models import Record, Resource, Subscription, SyncJob, SyncRun
from tests.conftest import ADELE
from tests.flows import connected, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
NOTIFIED = SyncRun.Trigger.NOTIFICATION


@pytest.fixture
def inbox(client, portal, microsoft, contoso) -> SyncJob:
    """Adele's inbox, synced once and subscribed to."""
    adele = connected(client, microsoft, contoso.member, contoso.app)
    job = SyncJob.objects.get(connection=adele, resource=Resource.MAIL, folder="inbox")
    assert engine.run(job.pk).run.outcome == SyncRun.Outcome.SUCCEEDED
    assert subscriptions.ensure(job.pk) == "created"
    pending = keys.notified(job.pk)
    redis.Redis.from_url(django_settings.REDIS_URL).delete(pending)
    return job


def notification_runs(job) -> list[SyncRun]:
    return list(SyncRun.objects.filter(job=job, trigger=NOTIFIED))


def delivered(microsoft, kind: str) -> list[dict]:
    deliveries = microsoft.control.subscriptions()["deliveries"]
    return [d for d in deliveries if d["kind"] == kind and d["status"] is not None]


def test_a_new_message_arrives_through_a_notification_within_seconds(
    celery_worker, microsoft, inbox
):
    started = time.monotonic()
    [message_id] = microsoft.control.add_items(ADELE, "messages", count=1, folder="inbox")

    record = wait_for(lambda: Record.objects.filter(job=inbox, graph_id=message_id).first())
    assert time.monotonic() - started < 10
    [run] = wait_for(lambda: [r for r in notification_runs(inbox) if r.finished_at])
    assert run.outcome == SyncRun.Outcome.SUCCEEDED and run.created == 1 and run.pages == 1
    assert record.deleted_at is None
    sub = Subscription.objects.get(job=inbox)
    assert sub.notification_count == 1 and sub.last_notification_at is not None
    assert [d["status"] for d in delivered(microsoft, "change")] == [202]
    # With notifications working, the schedule falls back to the safety poll.
    inbox.refresh_from_db()
    waits = (inbox.next_run_at - timezone.now()).total_seconds()
    assert waits > django_settings.GRAPH_SAFETY_POLL_SECONDS - 60


def test_a_burst_of_notifications_for_one_job_gives_one_run(celery_worker, microsoft, inbox):
    sub = Subscription.objects.get(job=inbox)
    for _ in range(10):
        assert microsoft.control.fire_change(sub.graph_id, "updated") == 202

    wait_for(lambda: [r for r in notification_runs(inbox) if r.finished_at])
    time.sleep(2 * django_settings.GRAPH_NOTIFICATION_DELAY_SECONDS + 1)
    assert len(notification_runs(inbox)) == 1
    assert Subscription.objects.get(job=inbox).notification_count == 10


def test_notifications_for_several_jobs_in_one_body_start_one_run_each(
    celery_worker, client, microsoft, inbox
):
    sent = SyncJob.objects.get(
        connection=inbox.connection, resource=Resource.MAIL, folder="sentitems"
    )
    subscriptions.ensure(sent.pk)
    subs = list(Subscription.objects.filter(job__in=[inbox, sent]))
    items = [
        {"subscriptionId": sub.graph_id, "clientState": sub.client_state, "changeType": "created"}
        for sub in subs
        for _ in range(3)
    ]
    response = client.post(
        reverse("graph-notifications"), orjson.dumps({"value": items}), "application/json"
    )
    assert response.status_code == 202
    for job in (inbox, sent):
        wait_for(lambda job=job: [r for r in notification_runs(job) if r.finished_at])
    time.sleep(2 * django_settings.GRAPH_NOTIFICATION_DELAY_SECONDS)
    assert len(notification_runs(inbox)) == len(notification_runs(sent)) == 1


def test_a_notification_during_a_run_gets_a_run_of_its_own(monkeypatch, microsoft, inbox):
    queued: list[tuple] = []
    monkeypatch.setattr("core.queue.send", lambda task, *args, countdown=None: queued.append(args))
    assert scheduling.request_run(inbox.pk) and not scheduling.request_run(inbox.pk)
    assert queued == [(inbox.pk, NOTIFIED)]  # the second one was coalesced

    outcome = engine.run(inbox.pk, NOTIFIED)
    # A notification came in after this run had started: its change may postdate the delta.
    Subscription.objects.filter(job=inbox).update(last_notification_at=outcome.run.started_at)
    assert not scheduling.settle(inbox.pk, outcome)
    Subscription.objects.filter(job=inbox).update(last_notification_at=timezone.now())
    assert scheduling.settle(inbox.pk, outcome)
    assert queued == [(inbox.pk, NOTIFIED)] * 2


def test_a_wrong_client_state_is_dropped_and_logged_without_secrets(caplog, microsoft, inbox):
    sub = Subscription.objects.get(job=inbox)
    genuine = sub.client_state
    Subscription.objects.filter(pk=sub.pk).update(client_state="a-different-secret")
    caplog.set_level(logging.WARNING, logger="graphsync.notifications")

    microsoft.control.add_items(ADELE, "messages", count=1, folder="inbox")
    [delivery] = wait_for(lambda: delivered(microsoft, "change"))
    assert delivery["status"] == 202  # acknowledged: the sender learns nothing

    assert Subscription.objects.get(pk=sub.pk).notification_count == 0
    assert not redis.Redis.from_url(django_settings.REDIS_URL).exists(keys.notified(inbox.pk))
    assert f"wrong clientState for subscription '{sub.graph_id}'" in caplog.text
    assert genuine not in caplog.text and "a-different-secret" not in caplog.text


def test_unknown_subscriptions_are_dropped(client, caplog, microsoft, inbox):
    caplog.set_level(logging.WARNING, logger="graphsync.notifications")
    body = {"value": [{"subscriptionId": "not-ours", "clientState": "guess"}]}
    response = client.post(reverse("graph-notifications"), body, "application/json")
    assert response.status_code == 202
    assert "unknown subscription 'not-ours'" in caplog.text and "guess" not in caplog.text
    assert Subscription.objects.get(job=inbox).notification_count == 0


def test_the_handshake_echoes_the_decoded_token_as_plain_text(client):
    token = "Validation: Testing client application reachability & more <b>"
    for name in ("graph-notifications", "graph-lifecycle"):
        response = client.post(reverse(name) + "?validationToken=" + quote(token))
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain")
        assert response.content.decode() == token


def test_bodies_are_size_limited_and_must_be_json(client, settings):
    settings.GRAPH_NOTIFICATION_MAX_BYTES = 1000
    url = reverse("graph-notifications")
    big = orjson.dumps({"value": [{"subscriptionId": "x" * 1000}]})
    assert client.post(url, big, "application/json").status_code == 413
    assert client.post(url, b"not json", "application/json").status_code == 400
    assert client.get(url).status_code == 405


def test_reauthorization_required_renews(celery_worker, microsoft, inbox):
    sub = Subscription.objects.get(job=inbox)
    assert microsoft.control.fire_lifecycle(sub.graph_id, "reauthorizationRequired") == 202

    renewed = wait_for(
        lambda: Subscription.objects.filter(pk=sub.pk, renewed_at__gt=sub.renewed_at).first()
    )
    assert renewed.graph_id == sub.graph_id and renewed.lifecycle_count == 1
    assert renewed.last_lifecycle_event == "reauthorizationRequired"
    patches = [r for r in microsoft.control.requests(host="graph") if r["method"] == "PATCH"]
    assert len(patches) == 1


def test_subscription_removed_recreates_and_catches_up(celery_worker, microsoft, inbox):
    sub = Subscription.objects.get(job=inbox)
    assert microsoft.control.fire_lifecycle(sub.graph_id, "subscriptionRemoved") == 202

    fresh = wait_for(
        lambda: Subscription.objects.exclude(graph_id=sub.graph_id).filter(job=inbox).first()
    )
    assert fresh.status == Subscription.Status.ACTIVE
    assert list(microsoft.control.subscriptions()["subscriptions"])[0]["id"] == fresh.graph_id
    [run] = wait_for(lambda: [r for r in notification_runs(inbox) if r.finished_at])
    assert run.outcome == SyncRun.Outcome.SUCCEEDED


def test_missed_notifications_start_a_catch_up_run(celery_worker, microsoft, inbox):
    sub = Subscription.objects.get(job=inbox)
    assert microsoft.control.fire_lifecycle(sub.graph_id, "missed") == 202

    [run] = wait_for(lambda: [r for r in notification_runs(inbox) if r.finished_at])
    assert run.outcome == SyncRun.Outcome.SUCCEEDED
    assert Subscription.objects.get(pk=sub.pk).lifecycle_count == 1


def test_a_directory_change_reaches_an_app_only_connection(
    client, celery_worker, portal, microsoft, contoso
):
    from connections.models import Connection
    from tests.flows import follow_back

    client.force_login(contoso.admin)
    consent = client.post(reverse("connections:admin_consent", args=[contoso.app.pk]))
    follow_back(client, microsoft.control.sign_in(consent["Location"], ADELE))
    app_only = Connection.objects.get(kind=Connection.Kind.APPLICATION)
    users = SyncJob.objects.get(connection=app_only, resource=Resource.USERS)
    assert engine.run(users.pk).run.outcome == SyncRun.Outcome.SUCCEEDED
    assert subscriptions.ensure(users.pk) == "created"
    assert Subscription.objects.get(job=users).resource == "users"
    redis.Redis.from_url(django_settings.REDIS_URL).delete(keys.notified(users.pk))

    microsoft.control.update_user(ADELE, job_title="Chief Listening Officer")
    record = wait_for(
        lambda: next(
            (
                r
                for r in Record.objects.filter(job=users, graph_id=ADELE)
                if r.data.get("jobTitle") == "Chief Listening Officer"
            ),
            None,
        )
    )
    assert record.title == "Adele Vance"
    assert wait_for(lambda: [r for r in notification_runs(users) if r.finished_at])
