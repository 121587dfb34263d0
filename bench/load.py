"""Load: the portal under its people and Microsoft Graph at once.

python bench/load.py [--people 200] [--seconds 300] [--notifications 50] [--mailboxes 40]
                     [--idle 60] [--logs DIR]

Starts its own PostgreSQL (default durability), Redis, the emulator, the portal with the
production settings (DEBUG off) under gunicorn, and two Celery workers on every queue. Set up,
not measured: one tenant whose `--mailboxes` members connected through the portal's own flow,
their inboxes synced and subscribed to change notifications; the other members have no
connection; one in ten of the people are tenant administrators. Then:

1. Idle, `--idle` seconds: the probes alone.
2. Load, `--seconds` seconds: Locust, headless, in a process of its own
   (bench/load_locustfile.py): the people sign in and go through their pages (members: their
   connections, records and sync status; administrators: the dashboard and the lists of
   connections, jobs, records and runs), 2-6 s between pages, and Graph's change notifications
   at `--notifications` requests a second for random subscriptions (each asks for a sync run).

Two probes run in both phases: a new message added at the emulator to a random inbox every 2 s
(Graph notifies the portal; the time until the record is stored is the sync delay), and a token
refresh every 5 s as beat enqueues one, for a token made due (the time until it is stored is the
refresh delay). Prints p50/p95/p99 per page and errors (target 0), and the sync and refresh delays
idle and under load (target: p95 under load within 2x idle, or 1 s). Exits non-zero on errors.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Row,
    make_app,
    portal_server,
    quantile,
    scenario,
    services,
    setup_django,
    subscribed_inboxes,
    workers,
)
from devtools.localservices import free_port
from emulator.testing import running_emulator

ROOT = Path(__file__).resolve().parent.parent
QUEUES = "tokens,sync,bulk,default,webhooks"
PASSWORD = "bench-password-1"  # bench.common.connect_inbox_job's
SYNC_PROBE_EVERY = 2.0
REFRESH_PROBE_EVERY = 5.0
PROBE_TIMEOUT = 60.0


@dataclass
class Probes:
    """Delays seen by the probes, per phase."""

    sync: dict[str, list[float]] = field(default_factory=dict)
    refresh: dict[str, list[float]] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)


# --- set-up ---------------------------------------------------------------------------------------


def people(app, jobs, count: int) -> list[dict]:
    """The simulated people: the connected members, members without a connection, and one in
    ten tenant administrators."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from connections.models import Membership

    users = get_user_model().objects
    found = [
        {
            "username": job.connection.user.username,
            "password": PASSWORD,
            "role": "member",
            "connection": job.connection_id,
        }
        for job in jobs
    ]
    admins = max(count // 10, 1)
    for i in range(count - len(found) - admins):
        user = users.create_user(f"load-member-{i}", f"m{i}@load.example", PASSWORD)
        Membership.objects.create(user=user, tenant=app.tenant, role="member")
        found.append({"username": user.username, "password": PASSWORD, "role": "member"})
    for i in range(admins):
        user = users.create_user(f"load-admin-{i}", f"a{i}@load.example", PASSWORD, is_staff=True)
        Membership.objects.create(user=user, tenant=app.tenant, role="admin")
        found.append({"username": user.username, "password": PASSWORD, "role": "admin"})
    # Set-up hashed with a fast hasher the portal does not accept: one hash of the production
    # hasher's (PBKDF2, as signing in checks it) for everyone instead.
    production = PBKDF2PasswordHasher()
    hashed = production.encode(PASSWORD, production.salt())
    users.filter(username__in=[p["username"] for p in found]).update(password=hashed)
    return found


def subscriptions(jobs) -> list[dict]:
    from graphsync.models import Subscription

    return [
        {
            "id": sub.graph_id,
            "client_state": sub.client_state,
            "user": sub.job.connection.ms_object_id,
            "tenant": sub.job.connection.ms_tenant_id,
        }
        for sub in Subscription.objects.filter(job__in=jobs).select_related("job__connection")
    ]


# --- probes ---------------------------------------------------------------------------------------


def sync_probe(emu, jobs, phase: str, until: float, probes: Probes) -> None:
    """A message every SYNC_PROBE_EVERY seconds into a random inbox; its delay until stored."""
    from graphsync.models import Record

    delays = probes.sync.setdefault(phase, [])
    while time.monotonic() < until:
        job = random.choice(jobs)
        upn = job.connection.user_principal_name
        started = time.monotonic()
        [message] = emu.control.add_items(upn, "messages", 1, folder="inbox")
        while not Record.objects.filter(job=job, graph_id=message).exists():
            if time.monotonic() - started > PROBE_TIMEOUT:
                probes.lost[f"sync {phase}"] = probes.lost.get(f"sync {phase}", 0) + 1
                break
            time.sleep(0.05)
        else:
            delays.append(time.monotonic() - started)
        time.sleep(max(SYNC_PROBE_EVERY - (time.monotonic() - started), 0))


def refresh_probe(jobs, phase: str, until: float, probes: Probes) -> None:
    """Every REFRESH_PROBE_EVERY seconds a connection's token made due and its refresh enqueued
    as beat's dispatch does; its delay until the new token is stored."""
    from django.utils import timezone

    from connections.models import Connection
    from connections.tasks import refresh_connection

    delays = probes.refresh.setdefault(phase, [])
    order = [job.connection_id for job in jobs]
    random.shuffle(order)
    turn = 0
    while time.monotonic() < until:
        connection_id = order[turn % len(order)]
        turn += 1
        started = time.monotonic()
        before = timezone.now()
        Connection.objects.filter(pk=connection_id).update(
            access_token_expires_at=before + timedelta(minutes=1), refresh_requested_at=None
        )
        refresh_connection.delay(connection_id)
        while not Connection.objects.filter(
            pk=connection_id, last_refreshed_at__gt=before
        ).exists():
            if time.monotonic() - started > PROBE_TIMEOUT:
                probes.lost[f"refresh {phase}"] = probes.lost.get(f"refresh {phase}", 0) + 1
                break
            time.sleep(0.05)
        else:
            delays.append(time.monotonic() - started)
        time.sleep(max(REFRESH_PROBE_EVERY - (time.monotonic() - started), 0))


def probing(emu, jobs, phase: str, seconds: float, probes: Probes) -> list[threading.Thread]:
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(target=sync_probe, args=(emu, jobs, phase, until, probes), daemon=True),
        threading.Thread(target=refresh_probe, args=(jobs, phase, until, probes), daemon=True),
    ]
    for thread in threads:
        thread.start()
    return threads


# --- the load -------------------------------------------------------------------------------------


def locust(env: dict[str, str], args, world: Path, host: str) -> Path:
    """Run Locust headless for the load phase; the path prefix of its CSV statistics."""
    prefix = Path(env["_BENCH_WORKDIR"]) / "locust"
    graph_senders = 5
    command = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "load_locustfile.py"),
        "--headless", "--host", host, "--users", str(args.people + graph_senders),
        "--spawn-rate", str(max(args.people // 10, 1)), "--run-time", f"{int(args.seconds)}s",
        "--csv", str(prefix), "--only-summary", "--stop-timeout", "10",
    ]  # fmt: skip
    log = Path(env["_BENCH_WORKDIR"]) / "locust.log"
    with log.open("wb") as out:
        subprocess.run(
            command,
            cwd=ROOT,
            env={
                **os.environ,
                "LOAD_WORLD": str(world),
                "LOAD_NOTIFICATIONS_PER_SECOND": str(args.notifications),
                "LOAD_GRAPH_SENDERS": str(graph_senders),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=args.seconds + 120,
        )
    return prefix


def page_figures(prefix: Path) -> list[dict[str, str]]:
    with open(f"{prefix}_stats.csv", newline="") as stats:
        return [row for row in csv.DictReader(stats) if row["Name"] != "Aggregated"]


# --- report ---------------------------------------------------------------------------------------


def summary(values: list[float]) -> str:
    if not values:
        return "none"
    return (
        f"p50 {quantile(values, 0.5):.2f} s, p95 {quantile(values, 0.95):.2f} s, "
        f"max {max(values):.2f} s ({len(values)})"
    )


def report(pages: list[dict[str, str]], probes: Probes, args) -> tuple[list[Row], bool]:
    print(f"\nLoad: {args.people} people and {args.notifications:g} notifications/s for "
          f"{args.seconds:g} s; {args.mailboxes} connected mailboxes; 2 workers\n")  # fmt: skip
    print(f"{'page':<22} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    print("-" * 66)
    errors = 0
    rows = []
    for page in sorted(pages, key=lambda p: p["Name"]):
        count, failed = int(page["Request Count"]), int(page["Failure Count"])
        errors += failed
        p50, p95, p99 = page["50%"], page["95%"], page["99%"]
        print(f"{page['Name']:<22} {count:>9,} {failed:>7} {p50:>8} {p95:>8} {p99:>8}")
        rows.append(Row("5 load", f"{page['Name']}: p50 / p95 / p99 ms", f"{p50} / {p95} / {p99}"))
    print()
    ok = errors == 0 and not probes.lost
    rows.append(Row("5 load", "errors", f"{errors:,}", target="0", met=errors == 0))
    for name, figures in (("sync delay", probes.sync), ("refresh delay", probes.refresh)):
        idle, load = figures.get("idle", []), figures.get("load", [])
        print(f"{name:<14} idle: {summary(idle)}")
        print(f"{'':<14} load: {summary(load)}")
        if idle and load:
            bound = max(2 * quantile(idle, 0.95), 1.0)
            met = quantile(load, 0.95) <= bound
            ok = ok and met
            rows.append(
                Row(
                    "5 load",
                    f"{name} p95 under load vs idle",
                    f"{quantile(load, 0.95):.2f} s",
                    f"{quantile(idle, 0.95):.2f} s idle",
                    target=f"<= {bound:.2f} s",
                    met=met,
                )
            )
    if probes.lost:
        print(f"probes that never completed: {probes.lost}")
    return rows, ok


# --- main -----------------------------------------------------------------------------------------


def measure(env: dict[str, str], args) -> tuple[list[Row], bool]:
    upns = [f"load.{i}@contoso.example" for i in range(args.mailboxes)]
    probes = Probes()
    with (
        running_emulator(scenario(dict.fromkeys(upns, 20))) as emu,
        portal_server(env, production=True),
    ):
        print(f"  setting up {args.mailboxes} mailboxes and {args.people} people ...", flush=True)
        app = make_app(emu, "Load")
        jobs = subscribed_inboxes(emu, app, upns, page_size=50)
        world = Path(env["_BENCH_WORKDIR"]) / "world.json"
        world.write_text(
            json.dumps(
                {"people": people(app, jobs, args.people), "subscriptions": subscriptions(jobs)}
            )
        )
        with workers(env, 2, "load", queue=QUEUES):
            print(f"  idle for {args.idle:g} s ...", flush=True)
            for thread in probing(emu, jobs, "idle", args.idle, probes):
                thread.join()
            print(f"  load for {args.seconds:g} s ...", flush=True)
            threads = probing(emu, jobs, "load", args.seconds, probes)
            prefix = locust(env, args, world, env["PORTAL_BASE_URL"])
            for thread in threads:
                thread.join()
    return report(page_figures(prefix), probes, args)


def run(env: dict[str, str], quick: bool, options: dict) -> list[Row]:
    """bench/run.py's entry: a short run with --quick."""
    args = argparse.Namespace(
        people=20 if quick else 200,
        seconds=15 if quick else 300,
        notifications=10 if quick else 50,
        mailboxes=4 if quick else 40,
        idle=10 if quick else 60,
    )
    from django.conf import settings

    # run.py set Django up before this portal had a port: subscriptions name it from settings.
    base = f"http://127.0.0.1:{free_port()}"
    env, before = {**env, "PORTAL_BASE_URL": base}, settings.PORTAL_BASE_URL
    settings.PORTAL_BASE_URL = base
    try:
        rows, _ = measure(env, args)
    finally:
        settings.PORTAL_BASE_URL = before
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--notifications", type=float, default=50)
    parser.add_argument("--mailboxes", type=int, default=40)
    parser.add_argument("--idle", type=float, default=60)
    parser.add_argument("--logs", type=Path, help="copy the processes' logs into this folder")
    args = parser.parse_args()
    with services() as base:
        env = {**base, "PORTAL_BASE_URL": f"http://127.0.0.1:{free_port()}"}
        setup_django(env)
        logging.getLogger("graphsync").setLevel(logging.WARNING)
        try:
            _, ok = measure(env, args)
        finally:
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                for log in Path(env["_BENCH_WORKDIR"]).glob("*.log"):
                    shutil.copy(log, args.logs / log.name)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
