"""/metrics for Prometheus: a bearer token or nothing, Prometheus's text, counters that move where
things happen (requests, token refreshes, sync runs, Graph's answers, webhook attempts), gauges
read at scrape time, labels that never carry an id, and every process summed in multiprocess
mode."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta

import pytest
import redis
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from connections import events, tokens, webhooks
from connections.models import Connection, EventType, WebhookEndpoint
from connections.models.webhooks import new_secret
from devtools.localservices import free_port
from graphsync import engine
from graphsync.models import Resource, Subscription, SyncJob, SyncRun
from portal import metrics as endpoint
from portal.celery import app as celery_app
from tests.conftest import ADELE, MS_CLIENT_ID, ROOT
from tests.connections.webhook_receivers import Answer, running_receivers
from tests.flows import connected
from tests.portal.test_settings import GOOD

TOKEN = "metrics-test-token-" + "0123456789abcdef" * 2
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
Samples = dict[tuple[str, frozenset], float]


@pytest.fixture
def scrape(settings, monkeypatch):
    """Scrape /metrics as Prometheus does: a fresh client with the token and no session. The
    state gauges are read on every scrape (no cache) unless a test says otherwise."""
    settings.METRICS_TOKEN = TOKEN
    monkeypatch.setattr(endpoint, "state", endpoint.StateCollector(max_age=0))

    def read() -> Samples:
        response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200, response.content
        return samples(response.content.decode())

    return read


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


# --- who may scrape ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_are_off_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything")
    assert response.status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN],
)
def test_a_scrape_without_the_right_bearer_token_is_refused(client, settings, authorization):
    settings.METRICS_TOKEN = TOKEN
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = client.get("/metrics", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"graphport_" not in response.content


@pytest.mark.django_db
def test_the_scrape_is_prometheus_text_and_the_readme_lists_every_metric(scrape):
    # The scheme is case-insensitive (RFC 9110), as some scrapers write it.
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    names = {
        family.name
        for family in text_string_to_metric_families(response.content.decode())
        if family.name.startswith("graphport_")
    }
    assert {
        "graphport_http_requests",
        "graphport_http_request_duration_seconds",
        "graphport_token_refreshes",
        "graphport_sync_runs",
        "graphport_sync_records",
        "graphport_graph_requests",
        "graphport_graph_wait_seconds",
        "graphport_webhook_deliveries",
        "graphport_celery_queue_length",
        "graphport_sync_scheduler_lag_seconds",
        "graphport_subscriptions",
        "graphport_connections",
        "graphport_metrics_source_up",
    } <= names
    readme = (ROOT / "README.md").read_text()
    assert [name for name in sorted(names) if f"`{name}" not in readme] == []


# --- counted where it happens -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_request_is_counted_by_its_route_name_never_its_path(client, scrape, acme):
    before = scrape()
    assert client.get("/accounts/login/").status_code == 200
    assert client.get(f"/sync/connections/{acme.connection.pk}/records/").status_code == 302
    assert client.get("/no-such-page/98765/").status_code == 404
    after = scrape()

    login = {"view": "login", "method": "GET", "status": "2xx"}
    assert moved(before, after, "graphport_http_requests_total", **login) == 1
    records = {"view": "graphsync:records", "method": "GET", "status": "3xx"}
    assert moved(before, after, "graphport_http_requests_total", **records) == 1
    unmatched = {"view": "unmatched", "method": "GET", "status": "404"}
    assert moved(before, after, "graphport_http_requests_total", **unmatched) == 1
    assert moved(before, after, "graphport_http_request_duration_seconds_count", view="login") == 1


@pytest.mark.django_db(transaction=True)
def test_token_refreshes_are_counted_by_outcome_and_failure_class(
    client, microsoft, contoso, scrape
):
    adele = connected(client, microsoft, contoso.member, contoso.app)
    before = scrape()

    Connection.objects.filter(pk=adele.pk).update(access_token_expires_at=timezone.now())
    tokens.access_token(adele.pk)
    microsoft.control.revoke_grant(ADELE, MS_CLIENT_ID)
    with pytest.raises(tokens.ReconnectNeeded):
        tokens.refresh(adele.pk, force=True)
    after = scrape()

    name = "graphport_token_refreshes_total"
    assert moved(before, after, name, outcome="succeeded", failure_class="none") == 1
    assert moved(before, after, name, outcome="failed", failure_class="reconnect") == 1


@pytest.mark.django_db(transaction=True)
def test_a_sync_run_counts_its_end_its_records_and_graphs_answers(
    client, microsoft, contoso, scrape
):
    adele = connected(client, microsoft, contoso.member, contoso.app)
    job = SyncJob.objects.get(connection=adele, resource=Resource.MAIL, folder="inbox")
    before = scrape()

    run = engine.run(job.pk).run
    after = scrape()

    assert run.outcome == SyncRun.Outcome.SUCCEEDED and run.created > 0
    runs = {"resource": "mail", "outcome": "succeeded"}
    assert moved(before, after, "graphport_sync_runs_total", **runs) == 1
    created = {"resource": "mail", "change": "created"}
    assert moved(before, after, "graphport_sync_records_total", **created) == run.created
    assert moved(before, after, "graphport_graph_requests_total", status="2xx") == run.requests


@pytest.mark.django_db(transaction=True)
def test_graphs_429s_and_the_seconds_slept_on_them_are_counted(client, microsoft, contoso, scrape):
    adele = connected(client, microsoft, contoso.member, contoso.app)
    job = SyncJob.objects.get(connection=adele, resource=Resource.MAIL, folder="inbox")
    microsoft.control.throttle_mailbox(
        MS_CLIENT_ID, ADELE, rate_429=1.0, retry_after="seconds", retry_after_seconds=0.2
    )
    before = scrape()

    run = engine.run(job.pk).run
    after = scrape()

    assert run.outcome == SyncRun.Outcome.FAILED and run.throttled == 6
    assert moved(before, after, "graphport_graph_requests_total", status="429") == 6
    assert moved(before, after, "graphport_sync_runs_total", resource="mail", outcome="failed") == 1
    slept = moved(
        before, after, "graphport_graph_wait_seconds_total", scope="mailbox", reason="retry-after"
    )
    assert slept == pytest.approx(5 * 0.2, abs=0.05)


@pytest.fixture
def receivers(settings):
    yield from running_receivers(settings)


@pytest.mark.django_db
def test_webhook_attempts_are_counted_by_outcome(receivers, scrape, acme):
    flaky = receivers(Answer(status=200), Answer(status=500))
    gone = receivers(Answer(status=410))
    endpoints = [
        WebhookEndpoint.objects.create(tenant=acme.tenant, url=receiver.url, secret=new_secret())
        for receiver in (flaky, gone)
    ]
    events.emit(EventType.SYNC_COMPLETED, acme.tenant, {"job": 1})
    events.emit(EventType.SYNC_COMPLETED, acme.tenant, {"job": 2})
    before = scrape()

    for endpoint_ in endpoints:
        webhooks.deliver(endpoint_.pk)
    after = scrape()

    # The flaky receiver takes the first and refuses the second; the other one says 410 Gone
    # to the first, which ends its endpoint before the second is sent.
    name = "graphport_webhook_deliveries_total"
    assert moved(before, after, name, outcome="delivered") == 1
    assert moved(before, after, name, outcome="retrying") == 1
    assert moved(before, after, name, outcome="failed") == 1


# --- read when scraped ------------------------------------------------------------------------


@pytest.fixture
def quiet_broker(settings):
    """A broker database no Celery worker consumes from, so what is sent there stays queued."""
    settings.CELERY_BROKER_URL = settings.REDIS_URL.rsplit("/", 1)[0] + "/14"
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    keys = [key for queue in settings.CELERY_TASK_QUEUES for key in endpoint.queue_keys(queue.name)]
    broker.delete(*keys)
    yield settings.CELERY_BROKER_URL
    broker.delete(*keys)
    broker.close()


@pytest.mark.django_db
def test_queue_lengths_count_every_priority_of_every_queue(quiet_broker, scrape):
    with celery_app.connection_for_write(quiet_broker) as connection:
        for priority in (0, 5, 9):
            celery_app.send_task(
                "graphsync.tasks.run_job", queue="sync", priority=priority, connection=connection
            )
        celery_app.send_task(
            "connections.tasks.refresh_connection", queue="tokens", connection=connection
        )

    found = scrape()

    lengths = {
        dict(labels)["queue"]: number
        for (name, labels), number in found.items()
        if name == "graphport_celery_queue_length"
    }
    assert lengths == {"tokens": 1, "sync": 3, "bulk": 0, "default": 0, "webhooks": 0}
    assert value(found, "graphport_metrics_source_up", source="redis") == 1


@pytest.mark.django_db
def test_redis_away_leaves_the_queue_lengths_out_not_the_scrape(settings, scrape):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"

    found = scrape()

    assert value(found, "graphport_metrics_source_up", source="redis") == 0
    assert value(found, "graphport_metrics_source_up", source="database") == 1
    assert not any(name == "graphport_celery_queue_length" for name, _ in found)
    assert any(name == "graphport_connections" for name, _ in found)


@pytest.mark.django_db
def test_scheduler_lag_subscriptions_and_connections_are_read_from_the_database(
    scrape, acme, globex
):
    now = timezone.now()
    overdue = SyncJob.objects.create(
        connection=acme.connection,
        tenant=acme.tenant,
        resource=Resource.MAIL,
        folder="inbox",
        next_run_at=now - timedelta(seconds=300),
    )
    SyncJob.objects.create(  # its worker holds it: not waiting for dispatch
        connection=acme.connection,
        tenant=acme.tenant,
        resource=Resource.CONTACTS,
        next_run_at=now - timedelta(hours=1),
        lease_expires_at=now + timedelta(seconds=30),
    )
    Subscription.objects.create(
        job=overdue,
        tenant=acme.tenant,
        resource="me/mailFolders('inbox')/messages",
        change_types="created",
        client_state="s" * 64,
        status=Subscription.Status.FAILED,
    )
    Connection.objects.filter(pk=globex.connection.pk).update(
        status=Connection.Status.RECONNECT_NEEDED
    )

    found = scrape()

    assert 300 <= value(found, "graphport_sync_scheduler_lag_seconds") < 330
    assert value(found, "graphport_subscriptions", status="failed") == 1
    assert value(found, "graphport_subscriptions", status="active") == 0
    assert value(found, "graphport_connections", status="active") == 1
    assert value(found, "graphport_connections", status="reconnect_needed") == 1
    assert value(found, "graphport_connections", status="revoked") == 0
    assert value(found, "graphport_metrics_source_up", source="database") == 1


@pytest.mark.django_db
def test_scrapes_within_seconds_of_each_other_share_one_read(
    settings, monkeypatch, django_assert_num_queries
):
    settings.METRICS_TOKEN = TOKEN
    monkeypatch.setattr(endpoint, "state", endpoint.StateCollector())
    scraper = Client()
    assert scraper.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    with django_assert_num_queries(0):
        again = scraper.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert b"graphport_connections" in again.content


# --- labels -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_labels_never_carry_an_id(client, microsoft, contoso, scrape):
    adele = connected(client, microsoft, contoso.member, contoso.app)
    client.get(f"/sync/connections/{adele.pk}/records/")
    client.get(f"/sync/connections/{adele.pk}/status.json")
    client.get(f"/connections/{adele.pk}/disconnect/")
    client.get(f"/no-such-page/{ADELE}/")
    client.force_login(contoso.admin)
    client.get(f"/admin/connections/connection/{adele.pk}/change/")
    engine.run(SyncJob.objects.get(connection=adele, resource=Resource.PROFILE).pk)

    found = scrape()

    wrong = []
    for name, labels in found:
        if not name.startswith("graphport_"):
            continue  # the client library's own (python_info's version numbers, ...)
        for label, text in labels:
            if label == "status" and re.fullmatch(r"[1-5]\d\d", text):
                continue  # an HTTP status code: a few hundred values at most
            if re.fullmatch(r"\d+", text) or GUID.search(text) or "/" in text or len(text) > 80:
                wrong.append(f"{name}{{{label}={text!r}}}")
    assert wrong == []
    views = {
        dict(labels).get("view") for name, labels in found if name.startswith("graphport_http")
    }
    assert {"graphsync:records", "graphsync:status", "unmatched"} <= views


# --- every process counted ----------------------------------------------------------------------

WRITER = """
from core import metrics
metrics.WEBHOOK_DELIVERIES.labels(outcome="delivered").inc({delivered})
metrics.HTTP_DURATION.labels(view="login").observe(0.05)
"""


@pytest.mark.django_db
def test_multiprocess_mode_sums_every_process(settings, scrape, tmp_path):
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    for delivered in (2, 3):
        subprocess.run(
            [sys.executable, "-c", WRITER.format(delivered=delivered)],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=60,
        )
    assert len(list(tmp_path.glob("counter_*.db"))) == 2  # a file per process

    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path)
    found = scrape()

    assert value(found, "graphport_webhook_deliveries_total", outcome="delivered") == 5
    assert value(found, "graphport_http_request_duration_seconds_count", view="login") == 2
    # The gauges of state come from the scraping process itself.
    assert value(found, "graphport_metrics_source_up", source="database") == 1
    assert any(name == "graphport_celery_queue_length" for name, _ in found)


# --- configuration --------------------------------------------------------------------------

PROBE = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.METRICS_TOKEN, settings.PROMETHEUS_MULTIPROC_DIR)"
)


def start(**variables: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in GOOD and "METRICS" not in k}
    env.update(GOOD, DJANGO_SETTINGS_MODULE="portal.settings", **variables)
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_a_weak_metrics_token_stops_startup():
    result = start(METRICS_TOKEN="secret")
    assert result.returncode != 0
    assert "METRICS_TOKEN: too weak" in result.stderr


def test_the_metrics_token_can_come_from_a_file(tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    result = start(METRICS_TOKEN_FILE=str(tmp_path / "token"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [TOKEN, "None"]


def test_a_multiprocess_directory_that_is_not_one_stops_startup(tmp_path):
    result = start(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing"))
    assert result.returncode != 0
    assert "PROMETHEUS_MULTIPROC_DIR" in result.stderr and "not a directory" in result.stderr
