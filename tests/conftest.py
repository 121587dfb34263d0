from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.personas import make_tenant_world, make_user

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def operator(db):
    return make_user("operator", staff=True, superuser=True)


@pytest.fixture
def acme(db):
    return make_tenant_world("Acme", "aaaaaaaa-0000-4000-8000-000000000001", "AcmeSecretValue~1")


@pytest.fixture
def globex(db):
    return make_tenant_world(
        "Globex", "bbbbbbbb-0000-4000-8000-000000000002", "GlobexSecretValue~2"
    )


def database_url_for_subprocesses() -> str:
    """The URL of the test database (pytest-django renamed it) for worker processes."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail("worker processes need PostgreSQL: run the tests with `make test`")
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real Celery worker process on the test database and the test Redis."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    env = dict(os.environ, DATABASE_URL=database_url_for_subprocesses())
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "-Q",
                "tokens,sync,default",
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
                "--hostname",
                f"test-{os.getpid()}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    from portal.celery import app

    deadline = time.monotonic() + 60
    while not app.control.ping(timeout=0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the Celery worker did not start:\n{log.read_text()}")
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
