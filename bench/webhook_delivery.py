"""Webhook delivery: how many deliveries a second real Celery workers send to fast receivers.

python bench/webhook_delivery.py [--events 5000] [--receivers 4] [--workers 2] [--concurrency 2]

Starts its own PostgreSQL (default durability) and Redis, the receivers (aiohttp servers on
loopback, one event loop in a thread of this process, allowed by WEBHOOK_ALLOWED_HOSTS; each
checks every request's Standard Webhooks signature as it arrives and answers 200), one tenant
per receiver with one webhook endpoint, and two Celery workers (prefork) on the `webhooks` queue.

Set up, not measured: the workers are started and answer a ping. Measured: the events are
raised through `connections.events.emit`, the domain's own path, round-robin over the tenants,
all in one transaction; from its commit (which queues one delivery task per event) to the last
delivery settled in the database. Prints deliveries per second and the checks: every event
arrived at its receiver, none twice, every signature valid, every delivery settled as delivered
at its first attempt. Target: 500 deliveries/s on the reference machine (2 cores). Exits non-zero
when an event was lost or a signature did not verify.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import services, setup_django, workers
from core.formatting import plural
from devtools.localservices import free_port

TARGET = 500  # deliveries/s
TIMEOUT = 300  # seconds for every delivery to settle


@dataclass
class Inbox:
    """What one receiver got."""

    secret: str = ""
    ids: Counter = field(default_factory=Counter)
    bad_signatures: int = 0


class Receivers:
    """aiohttp servers on 127.0.0.1, one per inbox, in one event loop on a thread of its own."""

    def __init__(self, count: int):
        self.inboxes = [Inbox() for _ in range(count)]
        self.urls: list[str] = []
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._serve, args=(started,), daemon=True).start()
        started.wait()

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        for inbox in self.inboxes:
            self.loop.run_until_complete(self._start(inbox))
        started.set()
        self.loop.run_forever()

    async def _start(self, inbox: Inbox) -> None:
        async def receive(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                Webhook(inbox.secret).verify(body, dict(request.headers), json_parse=False)
            except WebhookVerificationError:
                inbox.bad_signatures += 1
            inbox.ids[request.headers.get("webhook-id")] += 1
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hooks", receive)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.urls.append(f"http://127.0.0.1:{port}/hooks")

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def endpoints(receivers: Receivers) -> list:
    from connections.models import Tenant, WebhookEndpoint
    from connections.models.webhooks import new_secret

    made = []
    for n, (url, inbox) in enumerate(zip(receivers.urls, receivers.inboxes, strict=True)):
        tenant = Tenant.objects.create(name=f"Bench webhooks {n}")
        inbox.secret = new_secret()
        made.append(WebhookEndpoint.objects.create(tenant=tenant, url=url, secret=inbox.secret))
    return made


def raise_events(made: list, count: int) -> tuple[dict[int, set[str]], float, float]:
    """Emit `count` events round-robin over the endpoints' tenants in one transaction.
    Returns (webhook-ids per endpoint, seconds spent emitting, the commit's time)."""
    from django.db import transaction
    from django.utils import timezone

    from connections import events
    from connections.models import EventType

    ids: dict[int, set[str]] = {endpoint.pk: set() for endpoint in made}
    started = time.perf_counter()
    with transaction.atomic():
        for n in range(count):
            endpoint = made[n % len(made)]
            data = {"job": n, "resource": "mail", "created": 3, "updated": 1, "deleted": 0}
            event = events.emit(EventType.SYNC_COMPLETED, endpoint.tenant_id, data)
            ids[endpoint.pk].add(event.public_id)
        emitting = time.perf_counter() - started
        committed = timezone.now()  # the transaction commits (and queues its tasks) on exit
    return ids, emitting, committed.timestamp()


def settle(total: int) -> float:
    """Wait until every delivery is settled; returns the time the last one was delivered."""
    from django.db.models import Max

    from connections.models import WebhookDelivery

    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        pending = WebhookDelivery.objects.exclude(state=WebhookDelivery.State.DELIVERED).count()
        if not pending:
            break
        time.sleep(0.2)
    last = WebhookDelivery.objects.aggregate(last=Max("delivered_at"))["last"]
    if last is None:
        raise RuntimeError("nothing was delivered")
    return last.timestamp()


def run(options: argparse.Namespace, env: dict[str, str]) -> int:
    from connections.models import DeliveryAttempt, WebhookDelivery

    receivers = Receivers(options.receivers)
    made = endpoints(receivers)
    with workers(
        env,
        options.workers,
        "webhooks",
        queue="webhooks",
        pool="prefork",
        concurrency=options.concurrency,
    ):
        ids, emitting, committed = raise_events(made, options.events)
        print(
            f"  {options.events:,} events raised in {emitting:.1f} s "
            f"({options.events / emitting:,.0f}/s, one transaction)",
            flush=True,
        )
        finished = settle(options.events)
    receivers.stop()

    seconds = finished - committed
    rate = options.events / seconds
    delivered = WebhookDelivery.objects.filter(state=WebhookDelivery.State.DELIVERED).count()
    attempts = DeliveryAttempt.objects.count()
    lost = twice = bad = 0
    for endpoint, inbox in zip(made, receivers.inboxes, strict=True):
        lost += len(ids[endpoint.pk] - set(inbox.ids))
        twice += sum(n - 1 for n in inbox.ids.values() if n > 1)
        bad += inbox.bad_signatures
    processes = plural(options.concurrency, "process", "processes")
    print(
        f"  {delivered:,} of {options.events:,} delivered in {seconds:.2f} s from the commit: "
        f"{rate:,.0f} deliveries/s ({plural(options.receivers, 'receiver')}, "
        f"{plural(options.workers, 'worker')} x {processes}; {attempts:,} attempts)"
    )
    print(f"  lost: {lost}, received twice: {twice}, bad signatures: {bad}")
    print(f"  target >= {TARGET} deliveries/s: {'met' if rate >= TARGET else 'MISSED'}")
    return 1 if lost or bad or delivered != options.events else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--receivers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    options = parser.parse_args()
    with services() as env:
        env = {**env, "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
        setup_django(env)
        return run(options, env)


if __name__ == "__main__":
    sys.exit(main())
