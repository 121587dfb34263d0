from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from devtools.localservices import free_port
from portal import health

pytestmark = pytest.mark.django_db


def test_healthy_when_database_redis_and_a_worker_answer(client, celery_worker):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert {c["status"] for c in response.json()["checks"].values()} == {"up"}


def test_redis_down_gives_503_naming_it(client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.CELERY_BROKER_URL = settings.REDIS_URL
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["redis", "worker"]
    assert body["checks"]["database"]["status"] == "up"
    assert "ConnectionError" in body["checks"]["redis"]["error"]
    assert "127.0.0.1" not in response.text  # details stay in the log


def test_no_worker_gives_503_naming_the_worker(client, settings):
    # A broker database no worker consumes from: Redis answers, no worker does.
    settings.CELERY_BROKER_URL = settings.REDIS_URL.rsplit("/", 1)[0] + "/15"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["down"] == ["worker"]
    assert "no Celery worker answered" in response.json()["checks"]["worker"]["error"]


@pytest.fixture(autouse=True)
def fresh_worker_answers(monkeypatch):
    """Each test starts with no remembered ping or check, as a new web process does."""
    monkeypatch.setattr(health, "worker_answers", health.WorkerAnswers())
    monkeypatch.setattr(health, "direct_checks", health.DirectChecks())


@pytest.fixture
def pings(monkeypatch):
    """Counts the worker pings (each a broadcast); `gone` makes the workers stop answering."""
    control = health.celery_app.control
    real = control.ping
    counter = SimpleNamespace(count=0, gone=False)

    def ping(*args, **kwargs):
        counter.count += 1
        return [] if counter.gone else real(*args, **kwargs)

    monkeypatch.setattr(control, "ping", ping)
    return counter


def test_repeated_calls_share_one_worker_ping(client, celery_worker, pings):
    assert client.get("/healthz").status_code == 200
    started = time.monotonic()
    for _ in range(20):
        assert client.get("/healthz").status_code == 200
    assert time.monotonic() - started < 0.5
    assert pings.count == 1


def test_repeated_calls_within_a_second_touch_neither_database_nor_redis(
    client, celery_worker, django_assert_num_queries, monkeypatch
):
    assert client.get("/healthz").status_code == 200
    opened = []
    real = health.redis.Redis.from_url
    monkeypatch.setattr(
        health.redis.Redis, "from_url", lambda *a, **k: opened.append(a) or real(*a, **k)
    )
    with django_assert_num_queries(0):
        for _ in range(50):
            assert client.get("/healthz").status_code == 200
    assert opened == []


def test_livez_touches_nothing_and_needs_no_allowed_host(
    client, settings, monkeypatch, django_assert_num_queries
):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # Redis away: still alive
    settings.SECURE_SSL_REDIRECT = True  # probes come over plain HTTP, by address
    monkeypatch.setattr(health, "status", lambda: pytest.fail("livez checked something"))
    with django_assert_num_queries(0):
        response = client.get("/livez", HTTP_HOST="10.1.2.3:8000")
    assert (response.status_code, response.content) == (200, b"ok")
    assert response["Cache-Control"].startswith("max-age=0")


def test_healthz_answers_a_probe_by_address_over_plain_http(client, settings, celery_worker):
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/healthz", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200
    assert client.get("/", HTTP_HOST="10.1.2.3:8000").status_code == 400  # pages still check


def test_a_worker_gone_shows_as_down_once_the_answer_runs_out(
    client, celery_worker, pings, monkeypatch
):
    monkeypatch.setattr(health, "WORKER_ANSWER_SECONDS", 1.0)
    assert client.get("/healthz").status_code == 200
    pings.gone = True
    assert client.get("/healthz").status_code == 200  # the answer of a moment ago still holds

    started = time.monotonic()
    while (response := client.get("/healthz")).status_code == 200:
        assert time.monotonic() - started < 1.0 + health.PING_TIMEOUT + 2
        time.sleep(0.05)
    assert response.status_code == 503 and response.json()["down"] == ["worker"]
    assert "no Celery worker answered" in response.json()["checks"]["worker"]["error"]
    assert pings.count == 2  # the stale answer started one ping in the background, not one each
