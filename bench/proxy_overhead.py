"""What the Graph proxy adds to a call: GETs of one small Graph resource, straight to the
emulator with requests, through `graphsync.proxy.forward`, and through the API's proxy endpoint,
with the same connection.

python bench/proxy_overhead.py [--calls 500] [--path me]

Starts its own PostgreSQL (default durability), Redis and the emulator, connects one user through
the portal's own flow, then times each call on its own (keep-alive on both sides, the body read
to its end) and prints the mean, p50 and p95 per call of each way side by side, with what each
adds to the direct call. Through `forward` a call also reads the connection's token from the
database and takes and releases its throttle budgets in Redis: that is the overhead measured.
Through the HTTP API a call also goes through Django's middleware, the API key's authentication
and rate limit, and the view, in this process (no application server's socket). Each way is a
function in WAYS that prepares one call. Exits non-zero when a call does not answer 200.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import connect_inbox_job, make_app, scenario, services, setup_django
from emulator.testing import RunningEmulator, running_emulator

UPN = "proxy.bench@contoso.example"
WARM_UP = 20  # calls per way before timing: connections opened, scripts loaded, caches filled


@dataclass
class Setup:
    """What every way calls: one connection (connections.models.Connection) and one path."""

    connection: object
    path: str


#: One call of a way: returns the HTTP status after reading the whole body.
Call = Callable[[], int]


def direct(setup: Setup) -> Call:
    """requests straight to the emulator, with the connection's token: the floor."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {setup.connection.access_token}"
    url = f"{setup.connection.app.graph_url}/{setup.path}"

    def one() -> int:
        response = http.get(url, timeout=30)
        _ = response.content
        return response.status_code

    return one


def through_forward(setup: Setup) -> Call:
    """graphsync.proxy.forward, as the API view calls it (the connection already loaded)."""
    from graphsync.proxy import forward

    def one() -> int:
        with forward(
            setup.connection, "GET", setup.path, "", None, None, api_key_prefix="gpk_bench"
        ) as answer:
            for _ in answer.chunks:
                pass
            return answer.status

    return one


def through_api(setup: Setup) -> Call:
    """GET /api/v1/proxy/… with an API key, through Django's whole request handling
    (middleware, the key's authentication and rate limit, the view), in this process: what the
    API adds over forward(), without the application server's own socket handling."""
    from urllib.parse import urlsplit

    from django.conf import settings
    from django.test import Client

    from connections import apikeys

    settings.API_RATE_LIMIT_PER_MINUTE = 10**9  # the calls are measured, not the key's limit
    _, raw = apikeys.issue(setup.connection.app.tenant, "bench", write=False)
    client = Client(HTTP_HOST=urlsplit(settings.PORTAL_BASE_URL).netloc or "localhost")
    url = f"/api/v1/proxy/{setup.connection.pk}/{setup.path}"
    headers = {"Authorization": f"Bearer {raw}"}

    def one() -> int:
        response = client.get(url, headers=headers)
        for _ in response.streaming_content if response.streaming else [response.content]:
            pass
        return response.status_code

    return one


WAYS: dict[str, Callable[[Setup], Call]] = {
    "direct (requests)": direct,
    "forward()": through_forward,
    "HTTP API": through_api,
}


@dataclass
class Figures:
    way: str
    ms: list[float]
    failures: int

    @property
    def mean(self) -> float:
        return statistics.fmean(self.ms)

    @property
    def p50(self) -> float:
        return statistics.median(self.ms)

    @property
    def p95(self) -> float:
        return statistics.quantiles(self.ms, n=20)[-1]


def measure(way: str, one: Call, calls: int) -> Figures:
    for _ in range(WARM_UP):
        one()
    ms: list[float] = []
    failures = 0
    for _ in range(calls):
        started = time.perf_counter()
        status = one()
        ms.append((time.perf_counter() - started) * 1000)
        failures += status != 200
    return Figures(way, ms, failures)


def prepare(emu: RunningEmulator, path: str) -> Setup:
    from connections.models import Connection

    app = make_app(emu, "Bench proxy")
    connection = connect_inbox_job(emu, app, UPN, page_size=10).connection
    # The emulator's directory budget would bind long before our own: lift it, so every way
    # measures requests, not the emulator's 429s.
    emu.control.throttle_tenant(app.client_id, emu.scenario["tenants"][0]["id"], 10**9)
    emu.control.throttle_mailbox(budget=10**9)
    connection = Connection.objects.select_related("app").get(pk=connection.pk)
    return Setup(connection, path)


def report(results: list[Figures], calls: int, path: str) -> None:
    floor = results[0]
    print(f"\nProxy overhead: {calls:,} GETs of /{path} per way, one connection, keep-alive\n")
    head = f"{'way':<20} {'mean ms':>8} {'p50 ms':>7} {'p95 ms':>7}   adds (mean / p50 / p95)"
    print(head)
    print("-" * len(head))
    for result in results:
        adds = (
            ""
            if result is floor
            else f"+{result.mean - floor.mean:.2f} / +{result.p50 - floor.p50:.2f} / "
            f"+{result.p95 - floor.p95:.2f} ms"
        )
        figures = f"{result.mean:>8.2f} {result.p50:>7.2f} {result.p95:>7.2f}"
        print(f"{result.way:<20} {figures}   {adds}".rstrip())
    failed = [f"{r.way}: {r.failures}" for r in results if r.failures]
    print(f"\ncalls not answered 200: {', '.join(failed) if failed else 'none'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--path", default="me", help="a Graph path under the version root")
    args = parser.parse_args()
    with services() as env:
        setup_django(env)
        with running_emulator(scenario({UPN: 10})) as emu:
            setup = prepare(emu, args.path)
            results = [measure(way, make(setup), args.calls) for way, make in WAYS.items()]
    report(results, args.calls, args.path)
    return 1 if any(result.failures for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
