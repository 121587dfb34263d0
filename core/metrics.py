"""Every Prometheus metric Graphport exports, defined here once (README.md, "Metrics").

Counters and histograms are counted where each fact happens: a request's answer
(portal.middleware), a token request (connections.tokens), a Graph answer and a throttle wait
(graphsync.client, graphsync.proxy, graphsync.throttle), a sync run's end and its pages
(graphsync.models, graphsync.engine), a webhook attempt (connections.webhooks). Counting is an
increment in memory (or in a memory-mapped file), never a database or Redis call. Gauges of
state (queues, the scheduler's lag, subscriptions, connections) are read when Prometheus scrapes
(portal.metrics), from the `StateGauge`s below.

Labels take their values from fixed sets only: an enum's values, a URL pattern's name, a status
class. Never an id, a URL or text someone typed: every distinct value is a time series that
Prometheus keeps, so one label fed with ids would grow without end.

Multiprocess mode. gunicorn's workers and Celery's prefork children are separate processes,
each counting on its own. With PROMETHEUS_MULTIPROC_DIR in the environment before
prometheus_client is first imported, every process writes its values to files in that directory
and a scrape sums them (`exposition`). The files outlive their processes on purpose: what a dead
worker counted still happened, and the sums never go down while the services run. So the
directory is emptied once before the web server and the workers start together, never under
running processes (README.md, "Metrics"); every counter then starts again from zero, which
Prometheus's rate() takes as the restart it is.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# A `_created` series beside every counter's: the classic text format has no use for it, and
# multiprocess mode never writes it; without it both modes show the same series.
disable_created_metrics()


class RefreshOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


#: the failure class of a refresh that succeeded
NO_FAILURE = "none"


class DeliveryOutcome(enum.StrEnum):
    DELIVERED = "delivered"  # the receiver answered 2xx
    RETRYING = "retrying"  # failed; another attempt is scheduled
    FAILED = "failed"  # failed for good: the schedule is spent, or the receiver said 410 Gone


class RecordChange(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


#: Status codes that mean something of their own here (Graph's throttling and token answers,
#: a lost delta); any other is counted by its class, "2xx" and so on.
NAMED_STATUSES = frozenset({401, 403, 404, 410, 429, 500, 503, 504})
#: what a request that got no answer at all counts as
NO_ANSWER = "network"
#: A client may send any word as its method: the others count as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def status_label(status: int | None) -> str:
    if status is None:
        return NO_ANSWER
    return str(status) if status in NAMED_STATUSES else f"{status // 100}xx"


def method_label(method: str | None) -> str:
    return method if method in METHODS else "other"


# --- counted where it happens ----------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "graphport_http_requests",
    "Requests answered by the portal, by view (the URL pattern's name, or unmatched), method "
    "and status.",
    ["view", "method", "status"],
)
HTTP_DURATION = Histogram(
    "graphport_http_request_duration_seconds",
    "Seconds from a request's arrival until its response is ready (a streamed body: until it "
    "starts), by view.",
    ["view"],
)
TOKEN_REFRESHES = Counter(
    "graphport_token_refreshes",
    "Token requests that refresh a connection, by outcome and failure class "
    "(connections.identity.FailureClass; none when it succeeded).",
    ["outcome", "failure_class"],
)
SYNC_RUNS = Counter(
    "graphport_sync_runs",
    "Sync runs ended, by resource and outcome (succeeded, deferred, failed, interrupted).",
    ["resource", "outcome"],
)
SYNC_RECORDS = Counter(
    "graphport_sync_records",
    "Records written by sync runs, by resource and change (created, updated, deleted).",
    ["resource", "change"],
)
GRAPH_REQUESTS = Counter(
    "graphport_graph_requests",
    "Answers from Microsoft Graph (syncs, subscriptions and the API's proxy), by status: the "
    "code for 401, 403, 404, 410, 429, 500, 503 and 504, else its class; network when none "
    "came. A $batch counts its envelope and each request inside it.",
    ["status"],
)
GRAPH_WAIT = Counter(
    "graphport_graph_wait_seconds",
    "Seconds workers and the API's proxy slept before sending to Graph, by the scope that held "
    "them (its kind) and why: the budget's window, its concurrency, a cooldown another request "
    "set, or after a throttled or failed answer its Retry-After or a backoff.",
    ["scope", "reason"],
)
WEBHOOK_DELIVERIES = Counter(
    "graphport_webhook_deliveries",
    "Webhook delivery attempts to tenants' endpoints, by outcome (delivered, retrying, failed).",
    ["outcome"],
)


def records_written(resource: str, created: int, updated: int, deleted: int) -> None:
    for change, number in (
        (RecordChange.CREATED, created),
        (RecordChange.UPDATED, updated),
        (RecordChange.DELETED, deleted),
    ):
        if number:
            SYNC_RECORDS.labels(resource=resource, change=change).inc(number)


# --- read when scraped -------------------------------------------------------------------------


@dataclass(frozen=True)
class StateGauge:
    """A gauge whose value is read at scrape time by the scraping process itself, never written
    by the processes that change it (so it needs no multiprocess files)."""

    name: str
    documentation: str
    labels: tuple[str, ...] = ()

    def family(self, values: Mapping[tuple[str, ...], float]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in values.items():
            family.add_metric(labels, value)
        return family


QUEUE_LENGTH = StateGauge(
    "graphport_celery_queue_length",
    "Tasks waiting in each Celery queue (not those a worker holds: running, or counting down).",
    ("queue",),
)
SCHEDULER_LAG = StateGauge(
    "graphport_sync_scheduler_lag_seconds",
    "How long the longest-waiting sync job has been due without being dispatched (0: none is).",
)
SUBSCRIPTIONS = StateGauge(
    "graphport_subscriptions", "Graph change-notification subscriptions by status.", ("status",)
)
CONNECTIONS = StateGauge("graphport_connections", "Connections by status.", ("status",))
SOURCE_UP = StateGauge(
    "graphport_metrics_source_up",
    "1 when this scrape could read the source (database, redis); 0 when the gauges from it are "
    "missing.",
    ("source",),
)


# --- the scrape ------------------------------------------------------------------------------


def exposition(multiproc_dir: str | None, extra: Iterable[Collector] = ()) -> bytes:
    """The scrape's text: every process's counters (summed from `multiproc_dir`, or this
    process's own without it), then the `extra` collectors, read here and now."""
    registry = CollectorRegistry(auto_describe=False)
    if multiproc_dir:
        multiprocess.MultiProcessCollector(registry, path=multiproc_dir)
    else:
        registry.register(REGISTRY)
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's `child_exit` hook, as prometheus_client asks of multiprocess servers (the
    gunicorn config file: `from core.metrics import child_exit`). It removes the dead worker's
    files of gauges that follow live processes; counter and histogram files stay, since what
    the worker counted still happened."""
    path = os.environ.get(MULTIPROC_VARIABLE)
    if path:
        multiprocess.mark_process_dead(worker.pid, path)
