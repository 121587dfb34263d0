"""Webhook freshness: how soon a new message reaches a tenant's backend as `sync.completed`, with
change notifications on.

python bench/webhook_freshness.py [--mailboxes 200] [--messages 1000] [--seconds 15] [--logs DIR]

Starts its own PostgreSQL (default durability), Redis, the emulator with the mailboxes (a few
messages each), the portal's web server in a process of its own (gunicorn, eight threads,
PORTAL_BASE_URL pointing at it: the emulator POSTs Graph's change notifications to its
`/graph/notifications/`, batched as Graph batches them), two Celery workers (solo pool) on tokens,
sync, default and webhooks, and a receiver: a threaded HTTP server on
loopback in this process that checks each request's Standard Webhooks signature and notes when
each `sync.completed` arrived. No beat: only notifications start runs (with a subscription the
next poll is hours away), and emitting an event asks for its delivery task itself.

Set up, not measured: one tenant app, every mailbox connected through the portal's own flow, each
inbox synced once and subscribed to (`graphsync.subscriptions.ensure`), and a webhook endpoint
for `sync.completed` pointing at the receiver (allowed by WEBHOOK_ALLOWED_HOSTS). Measured: new
messages added at the emulator at a steady rate, shuffled over the mailboxes (the same number
each), the time each add was sent noted. An event covers the messages its run wrote: read from the
records feed (`graphsync.feed.page`) from the event's `records.from_cursor` up to the run's last
seq. A message's latency is the arrival of the first event covering it minus the time its add was
sent. Prints p50/p95/p99 and max, messages reported against added, deliveries per second, and
where the time went: per stage (the notification at the portal, the run's start and end, the
delivery attempt), the portal's answers to the notifications, the CPU of each process and of the
whole machine (other load on the machine shows there), and PostgreSQL sessions started.
`--logs` keeps the portal's and the workers' logs. Target: p99 <= 3 s, nothing lost. Exits
non-zero when a message never arrived.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    cpu_seconds,
    make_app,
    portal_server,
    postgres_cpu,
    postmaster_pid,
    quantile,
    scenario,
    services,
    serving_process,
    setup_django,
    subscribed_inboxes,
    workers,
)
from devtools.localservices import free_port
from emulator.testing import RunningEmulator, running_emulator

TARGET_P99 = 3.0  # seconds from the change at the emulator to the webhook at the receiver
WORKERS = 2
QUEUES = "tokens,sync,bulk,default,webhooks"
INITIAL_MESSAGES = 3  # per mailbox: the initial sync is set-up, kept short
PAGE_SIZE = 100
GRACE_SECONDS = 60  # after the last add, for the last events to arrive
SEED = 15
BUCKET_SECONDS = 3  # the timeline of waits


# --- the receiver -------------------------------------------------------------------------------


@dataclass
class Arrival:
    at: float  # wall clock (time.time()), as the adds are noted
    webhook_id: str
    payload: dict[str, Any]


class Receiver(ThreadingHTTPServer):
    """A tenant's backend at its fastest: checks the signature, notes the time, answers 204."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Hook)
        self.secret = ""
        self.arrivals: list[Arrival] = []
        self.rejected = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/graphport/events"

    def completed(self) -> list[Arrival]:
        with self.lock:
            return [a for a in self.arrivals if a.payload.get("type") == "sync.completed"]

    def created(self) -> int:
        """Records created by the runs of the events received so far (a message is created
        once: when this reaches the messages added, every one was reported)."""
        return sum(a.payload["data"]["created"] for a in self.completed())


class _Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, if the sender keeps its connection
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        arrived = time.time()
        try:
            payload = Webhook(self.server.secret).verify(body, dict(self.headers.items()))
        except WebhookVerificationError:
            with self.server.lock:
                self.server.rejected += 1
            self._answer(400)
            return
        with self.server.lock:
            self.server.arrivals.append(Arrival(arrived, self.headers["webhook-id"], payload))
        self._answer(204)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.shutdown()
        receiver.server_close()


# --- the portal's web server --------------------------------------------------------------------


# --- set-up -------------------------------------------------------------------------------------


def prepare(emu: RunningEmulator, mailboxes: list[str]) -> tuple[Any, list]:
    """Connect every mailbox, sync its inbox once and subscribe to it. Returns the app (an
    EntraApp) and the inbox jobs."""
    app = make_app(emu, "Bench freshness")
    return app, subscribed_inboxes(emu, app, mailboxes, PAGE_SIZE)


def make_endpoint(tenant, url: str, secret: str):
    from connections.models import EventType, WebhookEndpoint
    from connections.webhooks import url_problem

    if problem := url_problem(url):
        raise RuntimeError(f"the receiver may not receive webhooks: {problem}")
    return WebhookEndpoint.objects.create(
        tenant=tenant,
        url=url,
        description="bench receiver",
        event_types=[EventType.SYNC_COMPLETED],
        secret=secret,
    )


# --- the measurement ----------------------------------------------------------------------------


@dataclass
class Added:
    job_id: int
    at: float  # wall clock when the add was sent


def add_messages(emu: RunningEmulator, jobs: list, count: int, seconds: float) -> dict[str, Added]:
    """`count` new inbox messages at a steady rate over `seconds`, the mailboxes shuffled (each
    gets the same number, give or take one). Returns each message's job and time, by Graph id."""
    order = [jobs[i % len(jobs)] for i in range(count)]
    random.Random(SEED).shuffle(order)
    interval = seconds / count
    added: dict[str, Added] = {}
    start = time.monotonic()
    for k, job in enumerate(order):
        wait = start + k * interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        sent = time.time()
        [graph_id] = emu.control.add_items(
            job.connection.ms_object_id, "messages", count=1, folder="inbox"
        )
        added[graph_id] = Added(job.pk, sent)
    return added


def wait_for_events(receiver: Receiver, count: int, grace: float) -> None:
    deadline = time.monotonic() + grace
    while receiver.created() < count and time.monotonic() < deadline:
        time.sleep(0.2)


def covered_ids(data: dict[str, Any], runs: dict[int, Any]) -> set[str]:
    """The Graph ids an event's run wrote, read as a receiver would: the feed from the event's
    from_cursor, up to the run's last seq."""
    from connections.models import Connection
    from graphsync import feed

    run_ = runs[data["run"]]
    connection = Connection(pk=data["connection"])
    cursor = data["records"]["from_cursor"]
    ids: set[str] = set()
    while True:
        found = feed.page(connection, data["resource"], cursor, feed.MAX_LIMIT)
        rows = [r for r in found.records if r.feed_seq <= run_.feed_last_seq]
        ids.update(r.graph_id for r in rows if r.job_id == data["job"])
        if len(rows) < len(found.records) or not found.has_more:
            return ids
        cursor = found.next_cursor


@dataclass
class Message:
    graph_id: str
    added: Added
    arrival: Arrival | None = None


@dataclass
class Figures:
    messages: list[Message]
    events: list[Arrival]
    duplicates: int
    rejected: int
    adding_seconds: float
    stages: dict[str, list[float]] = field(default_factory=dict)
    notifications: list[float] = field(default_factory=list)
    runs: int = 0
    last_run_end: float = 0.0
    attempts: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    deliveries: dict[str, int] = field(default_factory=dict)  # by state, at the end
    busy_adding: float = 0.0  # cores busy while the messages were added, on average
    ours_adding: float = 0.0  # of which by the processes of this benchmark
    sessions: int = 0  # PostgreSQL sessions started while adding and waiting
    accepted: int = 0  # change notifications the portal accepted
    # the portal's answers to the emulator's notification POSTs, by status (its request log)
    answers: dict[str, int] = field(default_factory=dict)
    triggers: dict[str, int] = field(default_factory=dict)  # runs that wrote the messages
    # (seconds since the first add, that message's add -> run starts): does a backlog grow?
    waits: list[tuple[float, float]] = field(default_factory=list)


def analyse(
    added: dict[str, Added], receiver: Receiver, endpoint, adding_seconds: float
) -> Figures:
    from django.db.models import Count

    from connections.models import DeliveryAttempt, WebhookDelivery, WebhookEvent
    from graphsync.models import Subscription, SyncRun

    arrivals = sorted(receiver.completed(), key=lambda a: a.at)
    seen: set[str] = set()
    unique: list[Arrival] = []
    for arrival in arrivals:
        if arrival.webhook_id not in seen:
            seen.add(arrival.webhook_id)
            unique.append(arrival)
    runs = SyncRun.objects.in_bulk([a.payload["data"]["run"] for a in unique])
    messages = {graph_id: Message(graph_id, a) for graph_id, a in added.items()}
    first: dict[str, Arrival] = {}
    for arrival in unique:  # in arrival order: the first event covering a message wins
        if arrival.payload["data"].get("records"):
            for graph_id in covered_ids(arrival.payload["data"], runs) & added.keys():
                first.setdefault(graph_id, arrival)
    for graph_id, arrival in first.items():
        messages[graph_id].arrival = arrival

    figures = Figures(
        messages=list(messages.values()),
        events=unique,
        duplicates=len(arrivals) - len(unique),
        rejected=receiver.rejected,
        adding_seconds=adding_seconds,
    )

    # Where the time went, per message, from the timestamps the portal keeps.
    events = {
        e.public_id: e
        for e in WebhookEvent.objects.filter(public_id__in=[a.payload["id"] for a in unique])
    }
    attempts: dict[int, list] = {}
    for attempt in DeliveryAttempt.objects.filter(
        delivery__endpoint=endpoint, delivery__event__in=events.values()
    ).select_related("delivery"):
        attempts.setdefault(attempt.delivery.event_id, []).append(attempt)
    first_add = min(a.at for a in added.values())
    written = writing_runs(added)
    for run_ in written.values():
        figures.triggers[run_.trigger] = figures.triggers.get(run_.trigger, 0) + 1
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    for message in figures.messages:
        run_ = written.get(message.graph_id)
        if run_ is None:
            continue
        waited = run_.started_at.timestamp() - message.added.at
        stages["add -> run starts"].append(waited)
        figures.waits.append((message.added.at - first_add, waited))
        stages["run"].append((run_.finished_at - run_.started_at).total_seconds())
        if message.arrival is None:
            continue
        event = events.get(message.arrival.payload["id"])
        tried = [
            a
            for a in attempts.get(event.pk if event else -1, [])
            if a.started_at.timestamp() <= message.arrival.at
        ]
        if tried:
            attempt = max(tried, key=lambda a: a.started_at)
            ran = runs[message.arrival.payload["data"]["run"]]
            stages["run ends -> delivery attempt"].append(
                (attempt.started_at - ran.finished_at).total_seconds()
            )
            stages["attempt -> at the receiver"].append(
                message.arrival.at - attempt.started_at.timestamp()
            )
    figures.stages = stages

    # The portal keeps when each subscription last heard from Microsoft: for the last message
    # added to each mailbox, that is when its notification reached the portal.
    last_added: dict[int, float] = {}
    for a in added.values():
        last_added[a.job_id] = max(a.at, last_added.get(a.job_id, 0.0))
    for job_id, heard, count in Subscription.objects.filter(job_id__in=last_added).values_list(
        "job_id", "last_notification_at", "notification_count"
    ):
        figures.accepted += count
        # Earlier than the last add: that add's own notification was refused.
        if heard is not None and heard.timestamp() >= last_added[job_id]:
            figures.notifications.append(heard.timestamp() - last_added[job_id])

    notified = SyncRun.objects.filter(
        job_id__in=last_added, trigger=SyncRun.Trigger.NOTIFICATION, finished_at__isnull=False
    )
    timings = list(notified.values_list("started_at", "finished_at"))
    figures.runs = len(timings)
    if timings:
        figures.last_run_end = max(end for _, end in timings).timestamp() - first_add
    figures.deliveries = dict(
        WebhookDelivery.objects.filter(endpoint=endpoint)
        .values_list("state")
        .annotate(n=Count("pk"))
        .values_list("state", "n")
    )
    done = DeliveryAttempt.objects.filter(delivery__endpoint=endpoint)
    figures.attempts = done.count()
    return figures


def writing_runs(added: dict[str, Added]) -> dict:
    """The run that wrote each message's record (by Graph id): the job's run whose feed seqs
    hold the record's. Messages with no record yet are left out."""
    from graphsync.models import Record, SyncRun

    jobs = {a.job_id for a in added.values()}
    runs: dict[int, list] = {}
    for run_ in SyncRun.objects.filter(job_id__in=jobs, feed_first_seq__isnull=False):
        runs.setdefault(run_.job_id, []).append(run_)
    found = {}
    for graph_id, job_id, seq in Record.objects.filter(
        job_id__in=jobs, graph_id__in=list(added)
    ).values_list("graph_id", "job_id", "feed_seq"):
        for run_ in runs.get(job_id, []):
            if run_.feed_first_seq <= seq <= run_.feed_last_seq:
                found[graph_id] = run_
    return found


STAGES = (
    "add -> run starts",
    "run",
    "run ends -> delivery attempt",
    "attempt -> at the receiver",
)


def notification_answers(log: Path) -> dict[str, int]:
    """The portal's answers to Graph's change notifications, by status, from the web server's
    request log (no change happened before the measurement, so all are the measurement's)."""
    from django.urls import reverse

    answered = re.compile(rf'"POST {re.escape(reverse("graph-notifications"))} [^"]*" (\d+) ')
    found: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        if match := answered.search(line):
            found[match[1]] = found.get(match[1], 0) + 1
    return found


# --- CPU ----------------------------------------------------------------------------------------


def redis_pid(env: dict[str, str]) -> int | None:
    port = str(urlsplit(env["REDIS_URL"]).port)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if "redis-server" in command and port in command:
                    return int(entry.name)
    return None


def postgres_sessions() -> int:
    """Sessions PostgreSQL has started on the database so far (each one a forked backend)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def cpu_now(processes: dict[str, int], env: dict[str, str]) -> dict[str, float]:
    """CPU seconds so far of each process and of PostgreSQL, and `machine`: the seconds all
    cores were busy."""
    found = {name: cpu_seconds(pid) for name, pid in processes.items()}
    found["PostgreSQL"] = postgres_cpu(postmaster_pid(env))
    found["machine"] = machine_busy()
    return found


def machine_busy() -> float:
    """Seconds the machine's cores have been busy (not idle or waiting for I/O), all together."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# --- report -------------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"p50 {quantile(values, 0.5):6.3f}  p95 {quantile(values, 0.95):6.3f}  "
        f"p99 {quantile(values, 0.99):6.3f}  max {max(values):6.3f}  (n={len(values):,})"
    )


def report(f: Figures, mailboxes: int, seconds: float, delay: float) -> bool:
    count = len(f.messages)
    latencies = [m.arrival.at - m.added.at for m in f.messages if m.arrival is not None]
    lost = count - len(latencies)
    print(
        f"\nWebhook freshness: {count:,} new messages over {mailboxes} mailboxes, added in "
        f"{f.adding_seconds:.1f} s (asked {seconds:g} s, {count / max(f.adding_seconds, 1e-9):.0f}"
        f"/s); {WORKERS} workers (solo pool) on {QUEUES}; GRAPH_NOTIFICATION_DELAY_SECONDS "
        f"{delay:g}; {os.cpu_count()} cores\n"
    )
    print("seconds from the add at the emulator to sync.completed at the receiver:")
    print(f"  {spread(latencies)}")
    print(f"messages reported: {len(latencies):,}/{count:,} (lost {lost})")
    if f.events:
        window = f.events[-1].at - f.events[0].at
        rate = len(f.events) / window if window > 0 else float(len(f.events))
        print(
            f"sync.completed events: {len(f.events):,} ({count / len(f.events):.2f} messages "
            f"each), {rate:.1f} deliveries/s from first to last; {f.duplicates} repeated "
            f"webhook-ids, {f.rejected} bad signatures"
        )
    states = ", ".join(f"{n:,} {state}" for state, n in sorted(f.deliveries.items()))
    print(f"deliveries to the receiver at the end: {states or 'none'}")
    p99 = quantile(latencies, 0.99) if latencies else float("inf")
    met = p99 <= TARGET_P99 and lost == 0
    print(
        f"target: p99 <= {TARGET_P99:g} s and nothing lost: "
        + ("met" if met else f"NOT met (p99 {p99:.2f} s, {lost} lost)")
    )

    print("\nwhere the time goes, per message (s):")
    print(f"  {'add -> notification at the portal':<34} {spread(f.notifications)}")
    print("    (each mailbox's last message: Subscription.last_notification_at)")
    for name in STAGES:
        print(f"  {name:<34} {spread(f.stages.get(name, []))}")
    print(
        f"    'add -> run starts' holds the emulator's POST, the portal's answer, the "
        f"{delay:g} s coalescing countdown and the wait for a free worker"
    )
    if f.waits:
        buckets: dict[int, list[float]] = {}
        for offset, waited in f.waits:
            buckets.setdefault(int(offset // BUCKET_SECONDS), []).append(waited)
        line = ", ".join(
            f"{b * BUCKET_SECONDS:g}-{(b + 1) * BUCKET_SECONDS:g} s: {quantile(v, 0.5):.2f}"
            for b, v in sorted(buckets.items())
        )
        print(f"  add -> run starts, p50 by when the message was added: {line}")
    print(
        f"workers: {f.runs:,} notification runs, the last ending {f.last_run_end:.1f} s after "
        f"the first add; {f.attempts:,} delivery attempts"
    )
    print(
        f"machine CPU while adding: {f.busy_adding:.2f} of {os.cpu_count()} cores busy on "
        f"average, {f.ours_adding:.2f} by this benchmark's processes, "
        f"{max(f.busy_adding - f.ours_adding, 0):.2f} by others (compare runs with ~0 here)"
    )
    if f.cpu:
        processes = {name: value for name, value in f.cpu.items() if name != "machine"}
        total = sum(processes.values())
        parts = ", ".join(f"{name} {value:.1f}" for name, value in processes.items())
        print(f"CPU s while adding and waiting for the events: {parts}; total {total:.1f}")
    print(f"PostgreSQL sessions started meanwhile: {f.sessions:,}")
    answers = ", ".join(f"{n:,} {status}" for status, n in sorted(f.answers.items()))
    posts = sum(f.answers.values())
    print(
        f"change notifications: {len(f.messages):,} sent by the emulator in {posts:,} POSTs "
        f"(batched as Graph does), answered {answers or 'never'}; "
        f"{f.accepted:,} accepted by the portal"
    )
    if f.answers.get("429"):
        from django.conf import settings

        from graphsync.webhooks import BUDGET_WINDOW_SECONDS

        print(
            "  429: the portal's request budget per sending address (graphsync.webhooks, "
            f"{settings.GRAPH_NOTIFICATION_BUDGET} per {BUDGET_WINDOW_SECONDS} s); the emulator "
            "sends them again after their Retry-After, as Graph does"
        )
    stored = sum(f.triggers.values())
    runs = ", ".join(f"{n:,} by a {trigger} run" for trigger, n in sorted(f.triggers.items()))
    print(f"messages stored by Graphport: {stored:,}/{len(f.messages):,} ({runs or 'none'})")
    return lost == 0


# --- main ---------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, env: dict[str, str]) -> bool:
    from django.conf import settings

    from connections.models.webhooks import new_secret

    mailboxes = [f"fresh.{i}@contoso.example" for i in range(args.mailboxes)]
    delay = settings.GRAPH_NOTIFICATION_DELAY_SECONDS
    with (
        running_emulator(scenario(dict.fromkeys(mailboxes, INITIAL_MESSAGES))) as emu,
        portal_server(env) as portal,
        receiving() as receiver,
    ):
        print(f"  setting up {args.mailboxes} mailboxes ...", flush=True)
        app, jobs = prepare(emu, mailboxes)
        receiver.secret = new_secret()  # the admin's own
        endpoint = make_endpoint(app.tenant, receiver.url, receiver.secret)
        with workers(env, WORKERS, "freshness", queue=QUEUES) as started:
            processes = {
                "portal": serving_process(portal.pid),
                "emulator": emu.process.pid,
                **{f"worker {i + 1}": w.pid for i, w in enumerate(started)},
                "bench (receiver, adds)": os.getpid(),
            }
            if pid := redis_pid(env):
                processes["Redis"] = pid
            before = cpu_now(processes, env)
            sessions = postgres_sessions()
            print(f"  adding {args.messages:,} messages over {args.seconds:g} s ...", flush=True)
            began = time.monotonic()
            added = add_messages(emu, jobs, args.messages, args.seconds)
            adding = time.monotonic() - began
            during = cpu_now(processes, env)
            wait_for_events(receiver, len(added), GRACE_SECONDS)
            after = cpu_now(processes, env)
            sessions = postgres_sessions() - sessions
        figures = analyse(added, receiver, endpoint, adding)
        figures.answers = notification_answers(Path(env["_BENCH_WORKDIR"]) / "portal.log")
        figures.cpu = {name: after[name] - before[name] for name in before}
        figures.busy_adding = (during["machine"] - before["machine"]) / adding
        figures.ours_adding = (
            sum(during[name] - before[name] for name in before if name != "machine") / adding
        )
        figures.sessions = sessions
    return report(figures, args.mailboxes, args.seconds, delay)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mailboxes", type=int, default=200)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument(
        "--seconds", type=float, default=15, help="the adds are spread over this long"
    )
    parser.add_argument(
        "--logs", type=Path, help="copy the portal's and the workers' logs into this folder"
    )
    args = parser.parse_args()
    port = free_port()
    with services() as base:
        env = {
            **base,
            "PORTAL_BASE_URL": f"http://127.0.0.1:{port}",
            "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        }
        setup_django(env)
        logging.getLogger("graphsync").setLevel(logging.WARNING)  # a line per subscription
        try:
            ok = measure(args, env)
        finally:
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                for log in Path(env["_BENCH_WORKDIR"]).glob("*.log"):
                    shutil.copy(log, args.logs / log.name)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
