"""Webhooks through real Celery workers: what a transaction's commit sends, and a worker killed
in the middle of a request.

The workers listen on a Redis of the test's own, and this process's Celery app sends there too:
the session's worker does not list the loopback receivers in WEBHOOK_ALLOWED_HOSTS, and must not
take these tasks."""

from __future__ import annotations

import os
import signal

import pytest
from django.db import transaction

from connections import events
from connections.models import EventType, WebhookDelivery, WebhookEndpoint
from connections.models.webhooks import new_secret
from devtools.localservices import LocalRedis
from portal.celery import app as celery_app
from tests.connections.webhook_receivers import Answer, running_receivers
from tests.flows import wait_for
from tests.graphsync.test_workers import answering, client_of, start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)

LEASE = 20  # the shortest WEBHOOK_LEASE_SECONDS allows
WORKER_ENV = {
    "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "WEBHOOK_LEASE_SECONDS": str(LEASE),
    "MICROSOFT_ALLOW_HTTP": "true",
}


@pytest.fixture
def receivers(settings):
    yield from running_receivers(settings)


@pytest.fixture
def own_redis(tmp_path):
    server = LocalRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def own_queue(own_redis, settings, monkeypatch):
    """This process's tasks go to the test's own Redis (as in tests/graphsync/test_faults.py:
    Celery's configuration first, then Django's, then new broker connections), committed events
    included. Yields a client of it for pings, beat's ticks and results."""
    monkeypatch.setattr(celery_app.conf, "broker_url", own_redis.url)
    settings.CELERY_BROKER_URL = own_redis.url
    settings.WEBHOOK_DELIVER_ON_COMMIT = True  # the point of these tests
    monkeypatch.setattr(celery_app, "_pool", None)
    monkeypatch.setattr(celery_app.amqp, "_producer_pool", None)
    broker = client_of(own_redis.url)
    yield broker
    broker.close()


def webhook_worker(tmp_path, own_redis, name: str):
    return start_worker(tmp_path / f"{name}.log", own_redis.url, name, "webhooks", **WORKER_ENV)


def show_logs(*workers) -> None:
    for worker in workers:
        print(f"--- {worker.name}\n{worker.log_path.read_text()[-4000:]}")


def test_a_committed_change_is_delivered_and_a_rolled_back_one_sends_nothing(
    tmp_path, acme, receivers, own_redis, own_queue
):
    receiver = receivers()
    endpoint = WebhookEndpoint.objects.create(
        tenant=acme.tenant, url=receiver.url, secret=new_secret()
    )
    worker = webhook_worker(tmp_path, own_redis, "committed")
    try:
        answering(own_queue, worker)
        with pytest.raises(RuntimeError), transaction.atomic():
            events.emit(EventType.SYNC_FAILED, acme.tenant, {"job": "rolled back"})
            raise RuntimeError("the change failed")
        with transaction.atomic():
            event = events.emit(EventType.SYNC_FAILED, acme.tenant, {"job": "committed"})
            assert not receiver.requests  # nothing leaves before the commit

        delivered = WebhookDelivery.objects.filter(event=event, state="delivered")
        wait_for(delivered.exists, timeout=30)
        # A beat tick finds nothing left to send: the rolled-back event never existed.
        tick = own_queue.send_task("connections.tasks.sweep_webhooks", queue="webhooks")
        assert tick.get(timeout=30) == 0
    except BaseException:
        show_logs(worker)
        raise
    finally:
        stop_worker(worker)

    [request] = receiver.requests
    assert request.verify(endpoint.secret)["data"] == {"job": "committed"}
    assert request.webhook_id == event.public_id


def test_a_worker_killed_mid_request_is_redelivered_after_its_lease_with_the_same_id(
    tmp_path, acme, receivers, own_redis, own_queue
):
    # The first request hangs until the test ends; the one after it is answered.
    receiver = receivers(Answer(stall=300), Answer())
    endpoint = WebhookEndpoint.objects.create(
        tenant=acme.tenant, url=receiver.url, secret=new_secret()
    )
    first = webhook_worker(tmp_path, own_redis, "first")
    second = None
    try:
        answering(own_queue, first)
        with transaction.atomic():
            event = events.emit(EventType.SYNC_COMPLETED, acme.tenant, {"job": 7})
        wait_for(lambda: receiver.requests, timeout=30, every=0.05)
        os.killpg(first.pid, signal.SIGKILL)  # the whole worker, mid-request
        first.wait()

        second = webhook_worker(tmp_path, own_redis, "second")
        answering(own_queue, second)

        def redelivered() -> bool:
            # Beat's sweep, every second here: nothing is due until the dead worker's lease
            # has run out.
            own_queue.send_task("connections.tasks.sweep_webhooks", queue="webhooks")
            return len(receiver.requests) >= 2

        wait_for(redelivered, timeout=LEASE + 40, every=1)
        wait_for(WebhookDelivery.objects.filter(event=event, state="delivered").exists)
    except BaseException:
        show_logs(first, *([second] if second else []))
        raise
    finally:
        stop_worker(first)
        if second is not None:
            stop_worker(second)

    killed, again = receiver.requests[:2]
    assert again.at - killed.at >= LEASE - 1  # not before the lease ran out
    assert again.webhook_id == killed.webhook_id == event.public_id
    assert again.body == killed.body
    assert again.verify(endpoint.secret) == event.payload
    delivery = WebhookDelivery.objects.get(event=event)
    # The dead worker recorded nothing; the attempt that worked is the delivery's only one.
    assert delivery.attempts == 1 and delivery.attempt_log.count() == 1
