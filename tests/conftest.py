from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from connections.models import ClientSecret, EntraApp, Tenant
from core import keys
from tests.personas import make_tenant_world, make_user

ROOT = Path(__file__).resolve().parent.parent
WORKER_MAILBOX_BUDGET = {"max_in_flight": 4, "limit": 40, "window": 5}
WORKER_JOB_LEASE_SECONDS = 8


def pytest_configure(config):
    """Fix the live server's address up front (pytest-django reads this variable), so a worker
    started before the live server already knows where the portal's webhooks are."""
    if not config.getvalue("liveserver") and "DJANGO_LIVE_TEST_SERVER_ADDRESS" not in os.environ:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        os.environ["DJANGO_LIVE_TEST_SERVER_ADDRESS"] = f"localhost:{port}"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def no_sync_on_connect(settings):
    """Connecting creates sync jobs but does not enqueue them, unless a test turns it on:
    background syncs would otherwise spend tokens other tests count."""
    settings.GRAPHSYNC_START_ON_CONNECT = False


@pytest.fixture(autouse=True)
def operators_without_second_factor(request, settings):
    """Operators sign in with a password alone, unless a test is about the second factor
    (marked two_factor): the other tests would otherwise all meet the enrolment page."""
    if request.node.get_closest_marker("two_factor") is None:
        settings.TWO_FACTOR_FOR_OPERATORS = False


@pytest.fixture(autouse=True)
def fresh_sign_in_budgets():
    """Every test starts with unspent sign-in and password-reset budgets (portal.login): they
    live in Redis for an hour, longer than a test run."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    for pattern in (
        keys.LOGIN_FAILURES_PATTERN,
        keys.PASSWORD_RESETS_PATTERN,
        keys.SIGNIN_STARTS_PATTERN,
    ):
        found = list(client.scan_iter(pattern, count=1000))
        if found:
            client.delete(*found)


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
    """A real Celery worker process on the test database and the test Redis. Its portal is the
    live server's address, so the webhook URLs it gives Microsoft reach this test process."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    env = dict(
        os.environ,
        DATABASE_URL=database_url_for_subprocesses(),
        # A mailbox budget tight enough to bind in tests (the emulator is set to match), and a
        # short job lease so a killed worker's run is resumed within seconds.
        GRAPH_BUDGETS_JSON=json.dumps({"mailbox": WORKER_MAILBOX_BUDGET}),
        GRAPH_JOB_LEASE_SECONDS=str(WORKER_JOB_LEASE_SECONDS),
        PORTAL_BASE_URL=f"http://{os.environ['DJANGO_LIVE_TEST_SERVER_ADDRESS']}",
    )
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
                "tokens,sync,bulk,default,webhooks",
                "--concurrency",
                "3",
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
    try:
        while not app.control.ping(timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Celery worker did not start:\n{log.read_text()}")
    except BaseException:
        # Whatever stopped the wait (a broker error, a failed start), the worker and its pool
        # must not outlive the test run.
        os.killpg(process.pid, signal.SIGKILL)
        raise
    process.log_path = log  # for a test to show what the worker said
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


# --- Microsoft, played by the emulator -------------------------------------------------------

MS_TENANT = "8a3f2b1c-4d5e-4f60-9a7b-1c2d3e4f5a6b"  # Contoso in emulator/scenarios/demo.json
MS_CLIENT_ID = "3c9e6d1a-52b4-4f7e-8a1d-6b0c2e9f4a17"
MS_SECRET = "demo~secret.GraphportEmulator0123456789"
MS_SECRET_ID = "9b1f0c2e-3d4a-4b5c-8d6e-7f8091a2b3c4"
ADELE = "5f1c9e2a-7b3d-4c8e-9f10-2a3b4c5d6e7f"
ALEX = "0c7d8e9f-1a2b-4c3d-8e4f-5a6b7c8d9e0f"


@pytest.fixture(scope="session")
def microsoft_session():
    from emulator.testing import DEMO_SCENARIO, running_emulator

    with running_emulator(DEMO_SCENARIO) as emulator:
        yield emulator


@pytest.fixture
def microsoft(microsoft_session):
    """The emulator, reset to the demo scenario for each test."""
    from emulator.testing import DEMO_SCENARIO, load_scenario

    microsoft_session.control.load_scenario(load_scenario(DEMO_SCENARIO))
    microsoft_session.control.reset_counters()
    # Graphport's own state about these Microsoft ids (throttle budgets and cooldowns, token
    # locks) must not leak from one test into the next.
    client = redis.Redis.from_url(settings.REDIS_URL)
    for pattern in (keys.THROTTLE_PREFIX + "*", keys.PREFIX + "token-*"):
        found = list(client.scan_iter(pattern, count=1000))
        if found:
            client.delete(*found)
    return microsoft_session


@pytest.fixture
def contoso(db, microsoft, settings):
    """A portal tenant whose app registration points at the emulator's Contoso."""
    settings.MICROSOFT_ALLOW_HTTP = True
    tenant = Tenant.objects.create(name="Contoso Ltd")
    admin = make_user("contoso-admin", staff=True, tenant=tenant, role="admin")
    member = make_user("contoso-member", tenant=tenant, role="member")
    other = make_user("contoso-other", tenant=tenant, role="member")
    app = EntraApp.objects.create(
        tenant=tenant,
        name="Contoso Graph",
        client_id=MS_CLIENT_ID,
        directory_tenant_id=MS_TENANT,
        cloud="custom",
        login_base_url=microsoft.login_url,
        graph_base_url=microsoft.graph_url,
        authority="organizations",
        delegated_scopes="User.Read Mail.Read Calendars.Read Contacts.Read Files.Read",
        # Admin consent (and the app-only connection it stores) is offered only to apps with
        # application permissions: tests consent with this app.
        use_application_permissions=True,
        default_prompt="",
    )
    ClientSecret.objects.create(
        app=app,
        value=MS_SECRET,
        hint=MS_SECRET[:3],
        expires_on=timezone.localdate() + timedelta(days=365),
    )
    return SimpleNamespace(tenant=tenant, admin=admin, member=member, other=other, app=app)


@pytest.fixture
def portal(live_server, settings, microsoft):
    """The live portal in this process, reachable by the emulator (webhooks) and accepted as
    redirect URI by the emulator's app."""
    settings.PORTAL_BASE_URL = live_server.url
    microsoft.control.update_app(
        MS_CLIENT_ID, redirect_uris=[f"{live_server.url}/connections/callback/"]
    )
    return live_server.url


# Sign in with Microsoft: the operator's own sign-in app, and a directory of strangers.
PLATFORM_CLIENT_ID = "7d2c4b1a-9e8f-4a6b-8c5d-3e2f1a0b9c8d"
PLATFORM_SECRET = "platform~secret.SignInEmulator01234567890"
FABRIKAM = "2b4d6f80-1a3c-4e5f-8a7b-9c0d1e2f3a4b"


@pytest.fixture
def platform(microsoft, settings):
    """The operator's multi-tenant sign-in app, registered at the emulator."""
    settings.MICROSOFT_ALLOW_HTTP = True
    settings.SIGNIN_CLIENT_ID = PLATFORM_CLIENT_ID
    settings.SIGNIN_CLIENT_SECRET = PLATFORM_SECRET
    settings.SIGNIN_LOGIN_URL = microsoft.login_url
    settings.SIGNIN_AUTHORITY = "organizations"
    microsoft.control.add_app(
        client_id=PLATFORM_CLIENT_ID,
        name="Graphport sign-in",
        home_tenant=MS_TENANT,
        multi_tenant=True,
        redirect_uris=[f"{settings.PORTAL_BASE_URL}/connections/callback/"],
        secrets=[{"value": PLATFORM_SECRET, "expires_in": 86400}],
    )
    return microsoft


@pytest.fixture
def fabrikam(microsoft):
    """Another Microsoft directory, Fabrikam: its people are strangers to every tenant."""
    microsoft.control.add_tenant(id=FABRIKAM, domain="fabrikam.example", name="Fabrikam")
    return microsoft
