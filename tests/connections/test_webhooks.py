"""Delivering webhooks (connections.webhooks), called as the task calls it, to real receivers on
loopback: signatures, the retry schedule, what ends an endpoint, replays, order, leases and
turns. The clock is the database's: tests move `next_attempt_at` and `failing_since` instead of
waiting. Through real Celery workers: tests/connections/test_webhook_workers.py."""

from __future__ import annotations

import json
import random
import socket
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from connections import events, webhooks
from connections.models import (
    DeliveryAttempt,
    EventType,
    WebhookDelivery,
    WebhookEndpoint,
)
from connections.models.webhooks import new_secret
from core import queue
from devtools.localservices import free_port
from tests.connections.webhook_receivers import Answer, running_receivers

pytestmark = pytest.mark.django_db

REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture
def receivers(settings):
    yield from running_receivers(settings)


@pytest.fixture
def tasks(monkeypatch, settings):
    """The tasks asked for (name, args, countdown), kept here instead of sent."""
    settings.WEBHOOK_DELIVER_ON_COMMIT = True
    asked: list[tuple] = []
    monkeypatch.setattr(
        queue, "send", lambda task, *args, countdown=None: asked.append((task, args, countdown))
    )
    return asked


def endpoint_at(tenant, url: str, **fields) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(tenant=tenant, url=url, secret=new_secret(), **fields)


def emit(tenant, **data):
    return events.emit(EventType.SYNC_COMPLETED, tenant, {"job": 1, **data})


def delivery_of(event) -> WebhookDelivery:
    return WebhookDelivery.objects.get(event=event)


def make_due(delivery: WebhookDelivery) -> None:
    """Let the clock reach the delivery's next attempt."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


# --- what a receiver gets ----------------------------------------------------------------------


def test_the_receiver_verifies_the_signature_with_standardwebhooks(receivers, acme):
    receiver = receivers(Answer(body=b'{"received": true}'))
    endpoint = endpoint_at(acme.tenant, receiver.url)
    event = emit(acme.tenant, created=3)

    report = webhooks.deliver(endpoint.pk)

    assert (report.sent, report.delivered) == (1, 1)
    [request] = receiver.requests
    assert request.verify(endpoint.secret) == event.payload
    assert json.loads(request.body) == event.payload
    assert request.webhook_id == event.public_id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("Graphport")
    assert abs(int(request.headers["webhook-timestamp"]) - timezone.now().timestamp()) < 5
    with pytest.raises(WebhookVerificationError):
        request.verify(new_secret())
    delivery = delivery_of(event)
    assert delivery.state == WebhookDelivery.State.DELIVERED and delivery.delivered_at
    [attempt] = DeliveryAttempt.objects.filter(delivery=delivery)
    assert attempt.status_code == 200 and attempt.response_excerpt == '{"received": true}'


def test_during_a_rotation_both_secrets_sign_and_only_the_new_one_after(receivers, acme):
    receiver = receivers()
    endpoint = endpoint_at(acme.tenant, receiver.url)
    old = endpoint.secret
    new = endpoint.rotate_secret()
    assert new != old and new.startswith("whsec_")

    emit(acme.tenant)
    webhooks.deliver(endpoint.pk)
    during = receiver.requests[-1]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    during.verify(new)
    during.verify(old)  # a receiver not yet switched over still accepts it

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        previous_secret_until=timezone.now() - timedelta(seconds=1)
    )
    emit(acme.tenant)
    webhooks.deliver(endpoint.pk)
    after = receiver.requests[-1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    after.verify(new)
    with pytest.raises(WebhookVerificationError):
        after.verify(old)


def test_a_rotation_keeps_the_old_secret_for_24_hours(acme):
    endpoint = endpoint_at(acme.tenant, "https://hooks.acme.example/")
    old = endpoint.secret
    endpoint.rotate_secret()
    endpoint = WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert endpoint.previous_secret == old
    left = endpoint.previous_secret_until - timezone.now()
    assert timedelta(hours=23, minutes=59) < left <= timedelta(hours=24)
    assert len(Webhook(endpoint.secret)._whsecret) == 32


def test_deliveries_go_out_in_order_over_one_kept_alive_connection(receivers, acme):
    receiver = receivers()
    endpoint = endpoint_at(acme.tenant, receiver.url)
    ids = [emit(acme.tenant, n=n).public_id for n in range(30)]

    assert webhooks.deliver(endpoint.pk).delivered == 30

    assert [request.webhook_id for request in receiver.requests] == ids
    assert receiver.connections == 1
    delivered = WebhookDelivery.objects.filter(state=WebhookDelivery.State.DELIVERED)
    assert delivered.count() == 30 and DeliveryAttempt.objects.count() == 30


def test_only_the_start_of_a_long_answer_is_read(receivers, acme):
    receiver = receivers(Answer(body=b"x" * 1_000_000))
    endpoint = endpoint_at(acme.tenant, receiver.url)
    emit(acme.tenant)
    emit(acme.tenant)

    assert webhooks.deliver(endpoint.pk).delivered == 2
    excerpts = DeliveryAttempt.objects.values_list("response_excerpt", flat=True)
    assert [len(excerpt) for excerpt in excerpts] == [500, 500]
    assert receiver.connections == 2  # not drained: each cut off with its connection


# --- failures and the retry schedule ------------------------------------------------------------


def test_the_retry_delays_are_the_published_schedule_with_ten_percent_jitter():
    assert webhooks.RETRY_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    rng = random.Random(15)
    for failed, base in enumerate(webhooks.RETRY_SCHEDULE):
        delays = [webhooks.retry_delay(failed, rng) for _ in range(200)]
        assert all(base * 0.9 <= delay <= base * 1.1 for delay in delays)
        assert base == 0 or len(set(delays)) > 100  # jittered, not fixed
    assert webhooks.retry_delay(len(webhooks.RETRY_SCHEDULE)) is None


def test_failed_attempts_are_retried_on_the_schedule_then_given_up(receivers, acme):
    receiver = receivers(Answer(status=500, body=b"Internal Server Error"))
    endpoint = endpoint_at(acme.tenant, receiver.url)
    event = emit(acme.tenant)
    delivery = delivery_of(event)
    assert delivery.next_attempt_at <= timezone.now()  # the first attempt: at once

    for attempt, delay in enumerate((*webhooks.RETRY_SCHEDULE[1:], None), start=1):
        assert webhooks.deliver(endpoint.pk).sent == 1
        delivery.refresh_from_db()
        assert delivery.attempts == attempt and delivery.last_status == 500
        if delay is None:
            break
        last = delivery.attempt_log.first()
        finished = last.started_at + timedelta(milliseconds=last.duration_ms)
        waited = (delivery.next_attempt_at - finished).total_seconds()
        assert delay * 0.9 <= waited <= delay * 1.1, (attempt, waited)
        assert webhooks.deliver(endpoint.pk).sent == 0  # not before its time
        make_due(delivery)

    assert delivery.state == WebhookDelivery.State.FAILED
    assert delivery.last_error == "HTTP 500"
    assert len(receiver.requests) == len(webhooks.RETRY_SCHEDULE) == 8
    assert {request.webhook_id for request in receiver.requests} == {event.public_id}
    assert len({request.body for request in receiver.requests}) == 1
    assert [a.response_excerpt for a in delivery.attempt_log.all()] == ["Internal Server Error"] * 8
    make_due(delivery)
    assert webhooks.deliver(endpoint.pk).sent == 0  # failed is final (until replayed)


def test_a_timeout_is_retried_and_rests_the_endpoint(
    receivers, acme, tasks, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(webhooks, "READ_TIMEOUT", 0.3)
    receiver = receivers(Answer(stall=2), Answer())
    endpoint = endpoint_at(acme.tenant, receiver.url)
    first, second = emit(acme.tenant), emit(acme.tenant)

    with django_capture_on_commit_callbacks(execute=True):
        report = webhooks.deliver(endpoint.pk)

    assert (report.sent, report.stopped) == (1, "timeout")  # the next one is not tried now
    delivery = delivery_of(first)
    assert delivery.state == WebhookDelivery.State.PENDING and delivery.attempts == 1
    assert delivery.last_error == f"No answer from 127.0.0.1:{receiver.port} within 0.3 s"
    assert delivery.last_status is None
    assert delivery_of(second).attempts == 0 and delivery_of(second).leased_until is None
    [(_, args, countdown)] = tasks
    assert args == (endpoint.pk,) and countdown >= webhooks.TIMEOUT_REST

    make_due(delivery)
    assert webhooks.deliver(endpoint.pk).delivered == 2
    # Oldest due first: the second was due since it was raised, the retry only now.
    assert [r.webhook_id for r in receiver.requests] == [
        first.public_id,
        second.public_id,
        first.public_id,
    ]


def test_a_connection_error_is_retried(receivers, acme):
    closed = f"http://127.0.0.1:{free_port()}/hooks"
    endpoint = endpoint_at(acme.tenant, closed)
    event = emit(acme.tenant)

    before = timezone.now()
    webhooks.deliver(endpoint.pk)
    after = timezone.now()

    delivery = delivery_of(event)
    assert delivery.state == WebhookDelivery.State.PENDING and delivery.attempts == 1
    assert delivery.last_error == f"Could not connect to {closed.split('/')[2]}"
    # 5 s ± 10 %, counted from when the failure was scheduled, somewhere in [before, after].
    assert (delivery.next_attempt_at - before).total_seconds() >= 4.5
    assert (delivery.next_attempt_at - after).total_seconds() <= 5.5
    receiver = receivers()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(url=receiver.url)
    make_due(delivery)
    webhooks.deliver(endpoint.pk)
    assert delivery_of(event).state == WebhookDelivery.State.DELIVERED
    assert receiver.requests[0].webhook_id == event.public_id


def test_a_redirect_is_a_failure_and_is_not_followed(receivers, acme):
    elsewhere = receivers()
    receiver = receivers(Answer(status=307, headers={"Location": elsewhere.url}))
    endpoint = endpoint_at(acme.tenant, receiver.url)
    event = emit(acme.tenant)

    webhooks.deliver(endpoint.pk)

    delivery = delivery_of(event)
    assert delivery.state == WebhookDelivery.State.PENDING and delivery.attempts == 1
    assert delivery.last_status == 307 and "redirect" in delivery.last_error
    assert elsewhere.untouched


def test_410_gone_disables_the_endpoint_and_fails_its_pending_deliveries(receivers, acme):
    receiver = receivers(Answer(status=410))
    endpoint = endpoint_at(acme.tenant, receiver.url)
    for n in range(3):
        emit(acme.tenant, n=n)

    report = webhooks.deliver(endpoint.pk)

    assert (report.sent, report.stopped) == (1, "disabled")
    assert len(receiver.requests) == 1
    endpoint.refresh_from_db()
    assert not endpoint.enabled and "410 Gone" in endpoint.disabled_reason
    states = set(WebhookDelivery.objects.values_list("state", flat=True))
    assert states == {WebhookDelivery.State.FAILED}
    assert mail.outbox == []  # the receiver asked for it: nobody to alert
    assert emit(acme.tenant) is None  # a disabled endpoint gets no new deliveries
    assert webhooks.deliver(endpoint.pk) is None


def test_an_endpoint_failing_for_days_is_disabled_and_its_admins_emailed(receivers, acme, settings):
    receiver = receivers(Answer(status=503))
    days = settings.WEBHOOK_DISABLE_AFTER_DAYS
    endpoint = endpoint_at(acme.tenant, receiver.url, description="ERP")
    emit(acme.tenant)
    webhooks.deliver(endpoint.pk)
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.failing_since  # the spell started, not yet long

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(days=days, minutes=1)
    )
    emit(acme.tenant)
    WebhookDelivery.objects.update(next_attempt_at=timezone.now())
    report = webhooks.deliver(endpoint.pk)

    assert report.stopped == "disabled"
    endpoint.refresh_from_db()
    assert not endpoint.enabled and f"for {days} days" in endpoint.disabled_reason
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"failed"}
    [message] = mail.outbox
    assert message.to == [acme.admin.email]
    assert receiver.url in message.subject and "disabled" in message.subject
    assert f"/admin/connections/webhookendpoint/{endpoint.pk}/change/" in message.body
    assert "Replay failed since" in message.body


def test_a_success_ends_the_failing_spell(receivers, acme):
    receiver = receivers()
    endpoint = endpoint_at(
        acme.tenant, receiver.url, failing_since=timezone.now() - timedelta(days=4)
    )
    emit(acme.tenant)
    webhooks.deliver(endpoint.pk)
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None and endpoint.enabled


# --- where requests may go -------------------------------------------------------------------


def resolving(monkeypatch, name: str, address: str) -> None:
    def getaddrinfo(host, port, *args, **kwargs):
        if host != name:
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_an_internal_receiver_is_not_contacted_unless_its_host_is_allowed(
    receivers, acme, settings
):
    receiver = receivers()
    settings.WEBHOOK_ALLOWED_HOSTS = []
    settings.MICROSOFT_ALLOW_INTERNAL_HOSTS = True  # the emulator's switch lifts nothing here
    endpoint = endpoint_at(acme.tenant, receiver.url)  # stored as if the check had been passed
    event = emit(acme.tenant)

    webhooks.deliver(endpoint.pk)

    assert receiver.untouched
    # Worded as any unreachable host: nothing tells what is listening inside.
    assert delivery_of(event).last_error == f"Could not connect to 127.0.0.1:{receiver.port}"
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    make_due(delivery_of(event))
    webhooks.deliver(endpoint.pk)
    assert delivery_of(event).state == WebhookDelivery.State.DELIVERED


def test_a_name_resolving_to_an_internal_address_needs_the_name_allowed(
    receivers, acme, settings, monkeypatch
):
    receiver = receivers()
    resolving(monkeypatch, "erp.acme.example", "127.0.0.1")
    url = f"http://erp.acme.example:{receiver.port}/hooks"
    endpoint = endpoint_at(acme.tenant, url)
    event = emit(acme.tenant)
    assert webhooks.url_problem(url).startswith("erp.acme.example is an internal address")

    webhooks.deliver(endpoint.pk)
    assert receiver.untouched

    settings.WEBHOOK_ALLOWED_HOSTS = ["ERP.acme.example."]  # compared as host names are
    assert webhooks.url_problem(url) is None
    make_due(delivery_of(event))
    webhooks.deliver(endpoint.pk)
    assert delivery_of(event).state == WebhookDelivery.State.DELIVERED


# --- replays -------------------------------------------------------------------------------------


def test_a_replay_sends_the_same_payload_with_the_same_webhook_id(receivers, acme):
    receiver = receivers()
    endpoint = endpoint_at(acme.tenant, receiver.url)
    event = emit(acme.tenant, created=2)
    webhooks.deliver(endpoint.pk)

    assert webhooks.replay(WebhookDelivery.objects.filter(event=event)) == 1
    delivery = delivery_of(event)
    assert delivery.state == WebhookDelivery.State.PENDING and delivery.attempts == 0
    webhooks.deliver(endpoint.pk)

    first, again = receiver.requests
    assert first.webhook_id == again.webhook_id == event.public_id
    assert first.body == again.body
    assert again.verify(endpoint.secret) == event.payload
    assert delivery_of(event).state == WebhookDelivery.State.DELIVERED
    assert delivery.attempt_log.count() == 2


def test_replaying_failed_deliveries_since_a_time_leaves_older_ones(receivers, acme):
    receiver = receivers()
    endpoint = endpoint_at(acme.tenant, receiver.url)
    old, recent = emit(acme.tenant), emit(acme.tenant)
    WebhookDelivery.objects.update(state=WebhookDelivery.State.FAILED, attempts=8)
    WebhookDelivery.objects.filter(event=old).update(created_at=timezone.now() - timedelta(days=2))

    since = timezone.now() - timedelta(days=1)
    assert webhooks.replay_failed_since(endpoint, since) == 1
    webhooks.deliver(endpoint.pk)

    assert [request.webhook_id for request in receiver.requests] == [recent.public_id]
    assert delivery_of(old).state == WebhookDelivery.State.FAILED


def test_a_disabled_endpoint_is_not_replayed(acme):
    endpoint = endpoint_at(acme.tenant, "https://hooks.acme.example/")
    emit(acme.tenant)
    endpoint.disable("The receiver answered 410 Gone")
    assert webhooks.replay(WebhookDelivery.objects.all()) == 0


# --- one task at a time, in turns ----------------------------------------------------------------


def test_one_task_at_a_time_sends_to_an_endpoint(receivers, acme):
    receiver = receivers()
    endpoint = endpoint_at(acme.tenant, receiver.url)
    emit(acme.tenant)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        lease_owner="another-worker", leased_until=timezone.now() + timedelta(seconds=30)
    )
    assert webhooks.deliver(endpoint.pk) is None
    assert receiver.untouched

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        leased_until=timezone.now() - timedelta(seconds=1)  # that worker died
    )
    assert webhooks.deliver(endpoint.pk).delivered == 1


def test_a_burst_of_events_queues_one_task(
    receivers, acme, tasks, django_capture_on_commit_callbacks
):
    endpoint = endpoint_at(acme.tenant, receivers().url)
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(20):
            emit(acme.tenant, n=n)
    assert tasks == [(webhooks.DELIVER_TASK, (endpoint.pk,), None)]

    # While that task runs, events queue none either: it claims them in its next batch, or
    # finds them once it has let the endpoint go, and queues the next task itself.
    WebhookEndpoint.objects.claim(endpoint.pk, "worker-1", timezone.now() + timedelta(seconds=60))
    with django_capture_on_commit_callbacks(execute=True):
        emit(acme.tenant)
    assert len(tasks) == 1
    WebhookEndpoint.objects.release(endpoint.pk, "worker-1")
    with django_capture_on_commit_callbacks(execute=True):
        webhooks._wake_when_due(endpoint.pk, rest=False)
    assert tasks[1:] == [(webhooks.DELIVER_TASK, (endpoint.pk,), None)]


def test_a_backlog_goes_on_in_turns_behind_other_endpoints(
    receivers, acme, globex, tasks, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(webhooks, "SLICE_DELIVERIES", 10)
    busy_receiver, quiet_receiver = receivers(), receivers()
    busy = endpoint_at(acme.tenant, busy_receiver.url)
    quiet = endpoint_at(globex.tenant, quiet_receiver.url)
    ids = [emit(acme.tenant, n=n).public_id for n in range(25)]

    with django_capture_on_commit_callbacks(execute=True):
        first = webhooks.deliver(busy.pk)

    assert first.sent == 10
    # Its next slice is a task queued behind every other endpoint's tasks...
    assert tasks == [(webhooks.DELIVER_TASK, (busy.pk,), None)]
    # ...and until it runs, the busy endpoint's new events queue no other before them,
    with django_capture_on_commit_callbacks(execute=True):
        ids.append(emit(acme.tenant).public_id)
        emit(globex.tenant)
    # while another endpoint's event gets its task at once.
    assert tasks[1:] == [(webhooks.DELIVER_TASK, (quiet.pk,), None)]
    assert webhooks.deliver(quiet.pk).delivered == 1
    assert webhooks.deliver(busy.pk).sent == 10
    assert webhooks.deliver(busy.pk).sent == 6
    assert [request.webhook_id for request in busy_receiver.requests] == ids


def test_a_slice_ends_after_its_time(receivers, acme, monkeypatch):
    monkeypatch.setattr(webhooks, "SLICE_SECONDS", 0.5)
    receiver = receivers(Answer(stall=0.2))
    endpoint = endpoint_at(acme.tenant, receiver.url)
    for n in range(10):
        emit(acme.tenant, n=n)

    report = webhooks.deliver(endpoint.pk)

    assert 2 <= report.sent <= 4
    unsent = WebhookDelivery.objects.filter(state=WebhookDelivery.State.PENDING)
    assert unsent.count() == 10 - report.sent
    assert not unsent.filter(leased_until__isnull=False).exists()  # let go for the next task


def test_the_sweep_wakes_endpoints_with_due_work_that_no_live_task_holds(
    acme, tasks, django_capture_on_commit_callbacks
):
    now = timezone.now()
    names = ("due", "dead", "held", "later", "disabled")
    endpoints = {name: endpoint_at(acme.tenant, f"https://{name}.acme.example/") for name in names}
    emit(acme.tenant)
    by = {name: WebhookDelivery.objects.filter(endpoint=e) for name, e in endpoints.items()}
    # A worker that died mid-batch: both leases ran out.
    by["dead"].update(leased_until=now - timedelta(seconds=1))
    WebhookEndpoint.objects.filter(pk=endpoints["dead"].pk).update(
        lease_owner="dead-worker", leased_until=now - timedelta(seconds=1)
    )
    WebhookEndpoint.objects.filter(pk=endpoints["held"].pk).update(
        lease_owner="live-worker", leased_until=now + timedelta(seconds=30)
    )
    by["later"].update(next_attempt_at=now + timedelta(minutes=5))
    WebhookEndpoint.objects.filter(pk=endpoints["disabled"].pk).update(enabled=False)

    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks.sweep() == 2

    woken = {args[0] for _, args, _ in tasks}
    assert woken == {endpoints["due"].pk, endpoints["dead"].pk}
