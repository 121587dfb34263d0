from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from connections.models import Connection
from connections.tasks import dispatch_token_refreshes
from portal.celery import app

pytestmark = pytest.mark.django_db(transaction=True)


def test_task_round_trip_through_a_real_worker(celery_worker, acme, globex):
    Connection.objects.filter(pk=acme.connection.pk).update(
        access_token_expires_at=timezone.now() + timedelta(minutes=2)
    )
    result = dispatch_token_refreshes.delay()
    assert result.get(timeout=30) == 1  # the worker read the test database: one is due
    assert result.successful()


def test_queues_routes_and_late_acknowledgement():
    conf = app.conf
    assert {q.name for q in conf.task_queues} == {"tokens", "sync", "bulk", "default", "webhooks"}
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert (
        app.amqp.router.route({}, "connections.tasks.dispatch_token_refreshes")["queue"].name
        == "tokens"
    )
    assert app.amqp.router.route({}, "graphsync.tasks.dispatch_due_syncs")["queue"].name == "sync"
    # Slow receivers never hold up refreshes or syncs: deliveries have a queue of their own.
    deliver = app.amqp.router.route({}, "connections.tasks.deliver_webhooks")
    assert deliver["queue"].name == "webhooks"


def test_every_beat_entry_names_a_registered_task():
    app.loader.import_default_modules()
    for name, entry in app.conf.beat_schedule.items():
        assert entry["task"] in app.tasks, name


def test_a_worker_keeps_its_database_connection_from_task_to_task(celery_worker, acme):
    """Opening a PostgreSQL connection costs a process: a worker's outlives its task."""

    def run_tasks(count: int) -> None:
        for _ in range(count):
            assert dispatch_token_refreshes.delay().get(timeout=30) == 0

    run_tasks(6)  # every worker process has run one, most likely
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        [(between,)] = cursor.fetchall()
    run_tasks(6)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_start < %s AND state_change > %s",
            [between, between],
        )
        [(reused,)] = cursor.fetchall()
    # Opened before the second round and used during it; closed around every task, none would be.
    assert reused >= 1
