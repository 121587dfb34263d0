"""/metrics for Prometheus (README.md, "Metrics"): what every process counted (core.metrics)
and the state of the queues, the scheduler, subscriptions and connections, read when scraped.

The endpoint asks for `Authorization: Bearer <METRICS_TOKEN>`, compared in constant time, and
needs no session: a scraper has none. Without METRICS_TOKEN it answers 404, as for a page that
does not exist.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Iterator

import redis
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

from connections.models import Connection
from core import metrics
from graphsync import dispatch
from graphsync.models import Subscription
from portal.celery import BrokerChannel

logger = logging.getLogger(__name__)

#: Scrapes within this many seconds of a read share it (several Prometheus servers, a dashboard).
CACHE_SECONDS = 5.0
#: A Redis that hangs costs a scrape this long, not Prometheus's whole scrape timeout.
REDIS_TIMEOUT_SECONDS = 2.0


def queue_keys(queue: str) -> list[str]:
    """The Redis lists kombu keeps a queue in: one per priority step, the queue's own name for
    the lowest and the name, kombu's separator and the step for the others (a task sent with a
    priority lands in those)."""
    return [
        f"{queue}{BrokerChannel.sep}{step}" if step else queue
        for step in BrokerChannel.priority_steps
    ]


def queue_lengths() -> dict[str, int]:
    """Tasks waiting in each Celery queue, read from the broker (REDIS_URL) in one round trip."""
    names = [queue.name for queue in settings.CELERY_TASK_QUEUES]
    client = redis.Redis.from_url(
        settings.CELERY_BROKER_URL,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
    try:
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                for key in queue_keys(name):
                    pipe.llen(key)
            lengths = iter(pipe.execute())
    finally:
        client.close()
    steps = len(BrokerChannel.priority_steps)
    return {name: sum(next(lengths) for _ in range(steps)) for name in names}


def _by_status(model: type[Connection] | type[Subscription]) -> dict[tuple[str, ...], int]:
    """Rows per status, every status present (a state that empties shows 0, not a gap)."""
    counts = dict(model.objects.values_list("status").annotate(n=Count("pk")).order_by())
    return {(status,): counts.get(status, 0) for status in model.Status.values}


class StateCollector:
    """The gauges of state, read at most once in CACHE_SECONDS by this process. In multiprocess
    mode too they come from the scraping process, not from files: they are the state now, not
    something each process counted. A source that cannot be read leaves its gauges out of the
    scrape, and `graphport_metrics_source_up` says which."""

    def __init__(self, max_age: float = CACHE_SECONDS):
        self.max_age = max_age
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._read_at is None or now - self._read_at >= self.max_age:
                self._families = self._read()
                self._read_at = now
            families = self._families
        yield from families

    def _read(self) -> list[Metric]:
        families, up = [], {}
        try:
            families += [
                metrics.SCHEDULER_LAG.family({(): dispatch.lag()}),
                metrics.SUBSCRIPTIONS.family(_by_status(Subscription)),
                metrics.CONNECTIONS.family(_by_status(Connection)),
            ]
            up["database"] = 1
        except DatabaseError:
            logger.warning("metrics: the database could not be read", exc_info=True)
            up["database"] = 0
        try:
            lengths = queue_lengths()
            families.append(metrics.QUEUE_LENGTH.family({(q,): n for q, n in lengths.items()}))
            up["redis"] = 1
        except redis.RedisError:
            logger.warning("metrics: Redis could not be read", exc_info=True)
            up["redis"] = 0
        families.append(metrics.SOURCE_UP.family({(source,): n for source, n in up.items()}))
        return families


state = StateCollector()


def _authorized(request: HttpRequest) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), settings.METRICS_TOKEN.encode()
    )


@never_cache
@require_GET
def endpoint(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_TOKEN:
        raise Http404("Metrics are off (no METRICS_TOKEN).")
    if not _authorized(request):
        response = HttpResponse(
            "A bearer token is required.", status=401, content_type="text/plain; charset=utf-8"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body = metrics.exposition(settings.PROMETHEUS_MULTIPROC_DIR, [state])
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
