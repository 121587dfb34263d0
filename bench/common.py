"""What every benchmark shares: its own PostgreSQL and Redis, Django set up against them, the
emulator's demo app registered in the portal, users connected through the portal's own flow,
Celery workers started as real processes, and the row type of the final table."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools.localservices import LocalPostgres, LocalRedis, wait_for_port  # noqa: E402
from emulator.testing import DEMO_SCENARIO, RunningEmulator  # noqa: E402

MB = 1024 * 1024


@dataclass
class Row:
    """One line of the final table: a figure of Graphport's against a comparison's."""

    benchmark: str
    figure: str
    graphport: str
    comparison: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None  # None: no target


# --- services -----------------------------------------------------------------------------------


@contextlib.contextmanager
def services() -> Iterator[dict[str, str]]:
    """PostgreSQL (durable) and Redis of our own; yields the environment the portal reads."""
    workdir = Path(tempfile.mkdtemp(prefix="graphport-bench-"))
    workdir.chmod(0o755)  # PostgreSQL runs as its own user and must reach its directory
    postgres = LocalPostgres(workdir / "postgres", durable=True)
    redis = LocalRedis(workdir / "redis")
    try:
        postgres.start()
        redis.start()
        yield {
            "ENV_FILE": os.devnull,
            "DEBUG": "false",
            "SECRET_KEY": "bench-" + Fernet.generate_key().decode(),
            "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "MICROSOFT_ALLOW_HTTP": "true",
            "MICROSOFT_ALLOW_INTERNAL_HOSTS": "true",
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
            "PYTHONUNBUFFERED": "1",
            "_BENCH_POSTMASTER_PID": str(workdir / "postgres" / "data" / "postmaster.pid"),
            "_BENCH_WORKDIR": str(workdir),
        }
    finally:
        redis.stop()
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    # A bench enqueues the jobs it measures; a connect must not start the others.
    settings.GRAPHSYNC_START_ON_CONNECT = False
    call_command("migrate", verbosity=0)


def scenario(mailboxes: dict[str, int] | None = None) -> dict:
    """The demo scenario plus one user per (upn, message count), tokens valid for a day (a
    refresh in the middle of a run would be measured as sync time)."""
    spec = json.loads(DEMO_SCENARIO.read_text())
    spec["settings"]["access_token_lifetime"] = 86_400
    spec["tenants"][0]["users"] += [
        {"upn": upn, "display_name": upn.split("@")[0], "data": {"messages": count}}
        for upn, count in (mailboxes or {}).items()
    ]
    return spec


# --- the portal side ----------------------------------------------------------------------------


def make_app(emu: RunningEmulator, tenant_name: str = "Bench", **fields):
    """The emulator's demo app registered in a new portal tenant; `fields` override the
    EntraApp's (an organisation's own authority and application permissions, say)."""
    from django.utils import timezone

    from connections.models import ClientSecret, EntraApp, Tenant

    demo = emu.scenario["apps"][0]
    tenant = Tenant.objects.create(name=tenant_name)
    app = EntraApp.objects.create(
        **{
            "tenant": tenant,
            "name": f"{tenant_name} Graph",
            "client_id": demo["client_id"],
            "directory_tenant_id": emu.scenario["tenants"][0]["id"],
            "cloud": "custom",
            "login_base_url": emu.login_url,
            "graph_base_url": emu.graph_url,
            "authority": "organizations",
            "delegated_scopes": "User.Read Mail.Read",
            "default_prompt": "",
            **fields,
        }
    )
    secret = demo["secrets"][0]["value"]
    ClientSecret.objects.create(
        app=app,
        value=secret,
        hint=secret[:3],
        expires_on=timezone.localdate() + timedelta(days=365),
    )
    return app


def connect_inbox_job(emu: RunningEmulator, app, upn: str, page_size: int):
    """The portal's own connect flow, with the emulator's scripted sign-in as the browser."""
    from django.contrib.auth import get_user_model

    from connections import connect
    from connections.models import Membership
    from graphsync.models import Resource, SyncJob

    user = get_user_model().objects.create_user(upn.split("@")[0], upn, "bench-password-1")
    Membership.objects.create(user=user, tenant=app.tenant, role="member")
    outcome = emu.control.sign_in(connect.start_connect(user, app), upn)
    params = outcome.get("params") or outcome.get("fields")
    if not params:
        raise RuntimeError(f"sign-in of {upn} failed: {outcome}")
    _, connection = connect.complete(user, params)
    job = SyncJob.objects.get(connection=connection, resource=Resource.MAIL, folder="inbox")
    job.options = {"page_size": page_size}
    job.save(update_fields=["options"])
    return job


def subscribed_inboxes(emu: RunningEmulator, app, mailboxes: list[str], page_size: int) -> list:
    """Connect every mailbox through the portal's flow, sync its inbox once and subscribe to it
    (the portal's web server must be up: Graph validates the notification URL). Returns the
    inbox jobs."""
    import redis
    from django.conf import settings

    from core import keys
    from graphsync import engine, subscriptions
    from graphsync.models import SyncRun

    # The bench's users are set-up, not measured: no password hashing worth the name.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    emu.control.update_app(app.client_id, redirect_uris=[app.redirect_uri])
    started = time.perf_counter()
    jobs = [connect_inbox_job(emu, app, upn, page_size) for upn in mailboxes]
    print(f"  {len(jobs)} mailboxes connected in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    for job in jobs:
        outcome = engine.run(job.pk, SyncRun.Trigger.FIRST)
        if outcome.run is None or outcome.run.outcome != SyncRun.Outcome.SUCCEEDED:
            raise RuntimeError(f"the initial sync of job {job.pk} failed: {outcome}")
        done = subscriptions.ensure(job.pk)
        if done != "created":
            raise RuntimeError(f"the subscription of job {job.pk} was not created: {done}")
    print(
        f"  {len(jobs)} inboxes synced and subscribed in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    # As the notification tests do: no run may be thought queued before the measurement.
    redis.Redis.from_url(settings.REDIS_URL).delete(*(keys.notified(job.pk) for job in jobs))
    return jobs


# --- processes ----------------------------------------------------------------------------------


class Worker:
    """One Celery worker process; with the solo pool it runs tasks itself."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        name: str,
        *,
        queue: str = "sync",
        pool: str = "solo",
        concurrency: int | None = None,
        extra_env: dict[str, str] | None = None,
    ):
        self.name = f"{name}@bench"
        self.log = log
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "-Q",
            queue,
            "--pool",
            pool,
            "--loglevel",
            "WARNING",
            "--hostname",
            self.name,
            "--without-gossip",
            "--without-mingle",
        ]
        if concurrency:
            command += ["--concurrency", str(concurrency)]
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **env, **(extra_env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60) -> Worker:
        from portal.celery import app

        deadline = time.monotonic() + timeout
        while not app.control.ping(destination=[self.name], timeout=0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Celery worker did not start:\n{self.log.read_text()}")
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def memory_mb(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MB: resident now, and its peak since the process started."""
        status = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        kb = {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith("Vm")}
        return kb["VmRSS"] / 1024, kb["VmHWM"] / 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()


@contextlib.contextmanager
def portal_server(env: dict[str, str], production: bool = False) -> Iterator[subprocess.Popen]:
    """The portal as Microsoft reaches it: gunicorn, one process of eight threads, each keeping
    its database connection (Django's development server opens one per request). `production`:
    as README.md's "Production" runs it, from portal.gunicorn (two processes of eight threads),
    static files collected and served under hashed names, metrics summed across processes."""
    port = urlsplit(env["PORTAL_BASE_URL"]).port
    workdir = Path(env["_BENCH_WORKDIR"])
    log = workdir / "portal.log"
    command = [
        *(sys.executable, "-m", "gunicorn", "portal.wsgi"),
        *("--worker-class", "gthread", "--workers", "1", "--threads", "8"),
        *("--bind", f"127.0.0.1:{port}", "--access-logfile", "-"),
    ]
    if production:
        (workdir / "metrics").mkdir(exist_ok=True)
        env = {
            **env,
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "STATIC_MANIFEST": "true",
            "STATIC_ROOT": str(workdir / "static"),
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        }
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
            cwd=ROOT,
            env={**os.environ, **env},
            check=True,
        )
        command = [sys.executable, "-m", "gunicorn", "-c", "python:portal.gunicorn"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, process, "the portal's web server", timeout=60)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def serving_process(master: int) -> int:
    """gunicorn's worker process (the master only watches it), or the master if none is seen."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.1)
    return master


@contextlib.contextmanager
def workers(env: dict[str, str], count: int, name: str, **options) -> Iterator[list[Worker]]:
    """`count` workers started together (they boot in parallel), stopped on the way out."""
    logs = Path(env["_BENCH_WORKDIR"])
    started = [
        Worker(env, logs / f"{name}-{i}.log", f"{name}-{i}", **options) for i in range(count)
    ]
    try:
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.stop()


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU of a process (and of its reaped children: PostgreSQL's backends)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu(postmaster_pid: int) -> float:
    total = cpu_seconds(postmaster_pid, children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == postmaster_pid:
                    total += cpu_seconds(int(entry.name))
    return total


def postmaster_pid(env: dict[str, str]) -> int:
    return int(Path(env["_BENCH_POSTMASTER_PID"]).read_text().split()[0])


def run_json(env: dict[str, str], *args: str, timeout: float = 3600) -> dict:
    """Run `python bench/<script> args` in a process of its own (so its peak memory is its own)
    and return the JSON object it prints last."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def quantile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]
