"""A plain `pip install` of the product has everything its broker needs, and a broker that
cannot take tasks never turns a stored connection into an error page."""

from __future__ import annotations

import shutil
import socket
import subprocess
import venv

import pytest
from django.urls import reverse

from connections.models import Connection
from graphsync.models import SyncJob
from portal.celery import app as celery_app
from tests.conftest import ADELE, ROOT
from tests.flows import connect

PRODUCT = ("core", "connections", "graphsync", "portal")


@pytest.mark.timeout(300)
def test_a_plain_install_imports_the_redis_transport_it_enqueues_through(tmp_path):
    """`pip install graphport`, no extras, into a fresh venv, resolving every dependency: the
    broker is Redis, and kombu's Redis transport must import there."""
    source = tmp_path / "graphport"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PRODUCT:
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    imported = subprocess.run(
        [python, "-c", "import kombu.transport.redis, celery.backends.redis"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr[-3000:]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the probe is closed


@pytest.fixture
def unreachable_broker(settings):
    """Tasks go to a broker nobody answers at (results still go to the test Redis)."""
    url = f"redis://127.0.0.1:{closed_port()}/0"
    settings.CELERY_BROKER_URL = url
    saved = celery_app.conf.broker_url, celery_app._pool, celery_app.amqp._producer_pool
    # Celery keeps its connection and producer pools: new ones are made for the new URL.
    celery_app.conf.broker_url = url
    celery_app._pool = celery_app.amqp._producer_pool = None
    yield url
    celery_app.conf.broker_url, celery_app._pool, celery_app.amqp._producer_pool = saved


@pytest.mark.django_db(transaction=True)  # on_commit work runs, as in a real request
def test_connect_with_the_broker_unreachable_stores_the_connection_and_says_connected(
    client, microsoft, contoso, settings, unreachable_broker, caplog
):
    settings.GRAPHSYNC_START_ON_CONNECT = True
    response = connect(client, microsoft, contoso.member, contoso.app)
    assert response.status_code == 302 and response["Location"] == reverse("connections:mine")
    page = client.get(response["Location"])
    assert "Connected adele.vance@contoso.example." in page.text
    connection = Connection.objects.get(ms_object_id=ADELE)
    assert connection.status == Connection.Status.ACTIVE
    # Due now: beat dispatches them once the broker is back.
    jobs = SyncJob.objects.filter(connection=connection, enabled=True)
    assert jobs.count() == 6
    assert "first runs not enqueued" in caplog.text
