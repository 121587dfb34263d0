from __future__ import annotations

import pytest

from devtools.localservices import free_port

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
