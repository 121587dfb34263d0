"""Redis going away: workers ride out its restart by themselves, and a request that needs it while
it is away says so (503) instead of failing with a 500."""

from __future__ import annotations

import logging

import orjson
import pytest
from django.urls import reverse

from devtools.localservices import LocalRedis, free_port
from graphsync.models import Resource, Subscription, SyncJob
from portal.celery import app as celery_app
from tests.flows import wait_for
from tests.graphsync.test_workers import answering, client_of, start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)
UNAVAILABLE = "Redis (the task queue) is unavailable; try again shortly"


def test_a_worker_holding_countdown_tasks_rides_out_a_redis_restart(tmp_path):
    servers = [LocalRedis(tmp_path / "redis").start()]  # restarted below: not the tests' Redis
    broker = client_of(servers[0].url)
    worker = start_worker(tmp_path / "worker.log", servers[0].url, "restart")
    try:
        answering(broker, worker)
        # Like the token refreshes' jitter: tasks the worker holds, unacknowledged, until due.
        for n in range(3):
            broker.send_task(
                "connections.tasks.refresh_connection", (10**9 + n,), countdown=600, queue="tokens"
            )
        wait_for(lambda: worker.log_path.read_text().count("refresh_connection[") >= 3)

        servers[0].stop()
        wait_for(lambda: "Connection to broker lost" in worker.log_path.read_text())
        servers.append(LocalRedis(servers[0].directory, port=servers[0].port).start())
        broker.close()
        broker = client_of(servers[-1].url)  # the old client's connections died with the server

        answering(broker, worker, timeout=30)
        assert worker.poll() is None
        done = broker.send_task("graphsync.tasks.dispatch_due_syncs", queue="sync")
        assert done.get(timeout=30) == 0  # a task ran: it read the (empty) job table
    except BaseException:
        print(worker.log_path.read_text()[-6000:])
        raise
    finally:
        broker.close()
        stop_worker(worker)
        for server in servers:
            server.stop()
    assert "Unrecoverable error" not in worker.log_path.read_text()


@pytest.fixture
def redis_away(settings, monkeypatch):
    """Redis, the broker included, at a port nobody listens on."""
    away = f"redis://127.0.0.1:{free_port()}/0"
    # Celery's configuration reads Django's settings: patch it first, so what monkeypatch
    # restores afterwards is the real broker and not the dead port.
    monkeypatch.setattr(celery_app.conf, "broker_url", away)
    settings.REDIS_URL = settings.CELERY_BROKER_URL = away
    # The app's broker connections were made for the real Redis: new ones, for this test only.
    monkeypatch.setattr(celery_app, "_pool", None)
    monkeypatch.setattr(celery_app.amqp, "_producer_pool", None)


def errors_logged(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_an_admin_action_while_redis_is_away_answers_503_saying_so(
    client, acme, redis_away, caplog
):
    job = SyncJob.objects.create(
        connection=acme.connection, tenant=acme.tenant, resource=Resource.MAIL, folder="inbox"
    )
    client.force_login(acme.admin)
    response = client.post(
        reverse("admin:graphsync_syncjob_changelist"),
        {"action": "run_now", "_selected_action": [job.pk]},
        HTTP_ACCEPT="text/html,application/xhtml+xml",
    )
    assert response.status_code == 503
    assert UNAVAILABLE in response.text and response["Content-Type"].startswith("text/html")
    assert int(response["Retry-After"]) > 0
    [logged] = errors_logged(caplog)  # once, not again by Django as a 5xx
    assert logged.name == "portal.middleware" and "/admin/" in logged.getMessage()


def test_a_notification_while_redis_is_away_answers_503_so_graph_retries(
    client, acme, redis_away, caplog
):
    job = SyncJob.objects.create(
        connection=acme.connection, tenant=acme.tenant, resource=Resource.MAIL, folder="inbox"
    )
    Subscription.objects.create(
        job=job,
        tenant=acme.tenant,
        graph_id="sub-1",
        resource="me/mailFolders('inbox')/messages",
        change_types="created",
        client_state="s" * 64,
    )
    body = {"value": [{"subscriptionId": "sub-1", "clientState": "s" * 64}]}
    response = client.post(reverse("graph-notifications"), orjson.dumps(body), "application/json")
    assert response.status_code == 503
    assert response.content.decode().startswith(UNAVAILABLE)
    assert len(errors_logged(caplog)) == 1
