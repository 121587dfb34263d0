"""Delivering outgoing webhooks to a tenant's receivers (docs/architecture.md, "Outgoing
webhooks"; what receivers see is in README.md, "Webhooks").

A delivery task works for one endpoint. It takes the endpoint's lease, so one task at a time
sends there, in order; claims the due deliveries in batches, leasing each claimed row too, so
what a dead worker held is found again once the lease runs out; signs each request (Standard
Webhooks) and sends it over a kept-alive session under the outbound rules; and settles each
batch in one transaction: the attempts in one INSERT, the delivered rows in one UPDATE, the
failures with their next attempt. It stops after SLICE_SECONDS or SLICE_DELIVERIES and asks for
another task if more is due, so on the `webhooks` queue one endpoint's backlog takes turns with
the others instead of holding them up.

Delivery is at least once: a worker that dies after the receiver answered but before the batch
was settled sends the same event again, with the same webhook-id, for the receiver to drop.
"""

from __future__ import annotations

import http.cookiejar
import os
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from itertools import groupby

import orjson
import requests
from django.conf import settings
from django.db import transaction
from django.db.models import Min, QuerySet
from django.utils import timezone
from standardwebhooks.webhooks import Webhook
from urllib3.exceptions import HTTPError as Urllib3Error

from connections import notices
from connections.models import DeliveryAttempt, WebhookDelivery, WebhookEndpoint
from core import metrics, outbound, queue

#: Seconds before each attempt, counted from the end of the one before, each ±JITTER: the first
#: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h. After the last, the delivery fails.
RETRY_SCHEDULE = (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
JITTER = 0.1
CONNECT_TIMEOUT = 3
READ_TIMEOUT = 10
#: the most of an answer read, for the attempt's excerpt; a bigger body is not drained
EXCERPT_BYTES = 2048
CLAIM_BATCH = 100
SLICE_SECONDS = 5
SLICE_DELIVERIES = 500
#: a retry due within this many seconds gets a task with a countdown; later ones, the sweep's
WAKE_HORIZON = 60
#: after a timeout the endpoint's other due deliveries wait this long: a receiver that hangs
#: would otherwise hold a worker for ten seconds per delivery, back to back
TIMEOUT_REST = 10
USER_AGENT = "Graphport-Webhooks/1.0"
DELIVER_TASK = "connections.tasks.deliver_webhooks"
#: receivers may be on internal addresses only when an operator listed their host
RULES = outbound.AllowList("WEBHOOK_ALLOWED_HOSTS")

GONE = 410


def url_problem(url: str) -> str | None:
    """Why `url` may not receive webhooks, in words for the administrator who typed it, or
    None. Every request checks again, since what a name resolves to can change."""
    return outbound.problem(url, RULES)


def wake(endpoint_id: int) -> None:
    """Ask for a delivery task for the endpoint once the current transaction commits, unless
    one is queued already: that one will find what this transaction wrote.

    Not core.queue.enqueue, which would queue a task per event: Celery takes a few milliseconds
    for each, even one with nothing to do, and a burst of events would bury every other
    endpoint's task under its own. The mark is written after the commit, outside the caller's
    transaction, so a change that raises an event never holds the endpoint's row lock."""
    if settings.WEBHOOK_DELIVER_ON_COMMIT:
        transaction.on_commit(partial(_queue_task, endpoint_id))


def _queue_task(endpoint_id: int) -> None:
    if WebhookEndpoint.objects.mark_queued(endpoint_id):
        queue.send(DELIVER_TASK, endpoint_id)


def retry_delay(failed_attempts: int, rng: random.Random | None = None) -> float | None:
    """Seconds from the end of a failed attempt to the next one, with jitter so receivers that
    come back are not hit by every retry at once; None when the schedule is spent."""
    if failed_attempts >= len(RETRY_SCHEDULE):
        return None
    return RETRY_SCHEDULE[failed_attempts] * (rng or random).uniform(1 - JITTER, 1 + JITTER)


def _lease_end() -> datetime:
    return timezone.now() + timedelta(seconds=settings.WEBHOOK_LEASE_SECONDS)


# --- the task's work -----------------------------------------------------------------------------


@dataclass
class Report:
    """What one task did for its endpoint."""

    sent: int = 0
    delivered: int = 0
    stopped: str = ""  # why it stopped before its slice was over: "timeout", "disabled", …

    def __str__(self) -> str:
        ended = f", stopped: {self.stopped}" if self.stopped else ""
        return f"sent {self.sent}, delivered {self.delivered}{ended}"


def deliver(endpoint_id: int) -> Report | None:
    """Send the endpoint's due deliveries for one slice. None when another task holds the
    endpoint (it sends what this one would have) or the endpoint is disabled."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    if not WebhookEndpoint.objects.claim(endpoint_id, owner, _lease_end()):
        return None
    try:
        report = _slice(endpoint_id, owner)
    finally:
        WebhookEndpoint.objects.release(endpoint_id, owner)
    # After the release: a delivery committed while this task was finishing is either seen
    # here, or its own task finds the endpoint free.
    _wake_when_due(endpoint_id, rest=report.stopped == "timeout")
    return report


def sweep() -> int:
    """Beat's tick: a task for every enabled endpoint with due deliveries that no live task
    holds (a worker that died, a retry whose time has come, a task lost on the way once its
    mark is stale). Returns how many endpoints needed one."""
    ids = list(WebhookEndpoint.objects.needing_a_task(timezone.now()).values_list("pk", flat=True))
    for pk in ids:
        wake(pk)
    return len(ids)


def _slice(endpoint_id: int, owner: str) -> Report:
    endpoint = WebhookEndpoint.objects.get(pk=endpoint_id)
    signers = [Webhook(secret) for secret in endpoint.signing_secrets(timezone.now())]
    session = _session()
    proxies = requests.utils.get_environ_proxies(endpoint.url)
    report = Report()
    deadline = time.monotonic() + SLICE_SECONDS
    while report.sent < SLICE_DELIVERIES and time.monotonic() < deadline:
        until = _lease_end()
        if not WebhookEndpoint.objects.renew(endpoint_id, owner, until):
            report.stopped = "disabled or lease lost"
            break
        wanted = min(CLAIM_BATCH, SLICE_DELIVERIES - report.sent)
        batch = _claim(endpoint_id, until, wanted)
        if not batch:
            break
        attempts: list[Attempt] = []
        for delivery in batch:
            if attempts and time.monotonic() >= deadline:
                break
            attempts.append(_send(session, endpoint, signers, delivery, proxies))
            if attempts[-1].status == GONE or attempts[-1].timed_out:
                break
        report.sent += len(attempts)
        report.delivered += sum(attempt.ok for attempt in attempts)
        report.stopped = _settle(endpoint, attempts, batch[len(attempts) :])
        if report.stopped or len(batch) < wanted:
            # A short batch was all that was due: what commits from now on, the check after
            # the release finds (deliver), without another claim here.
            break
    return report


def _claim(endpoint_id: int, until: datetime, limit: int) -> list[WebhookDelivery]:
    """Lease up to `limit` due deliveries of the endpoint, oldest due first. SKIP LOCKED: rows
    another transaction is writing (a replay, say) are left for the next batch."""
    with transaction.atomic():
        batch = list(
            WebhookDelivery.objects.due(timezone.now())
            .filter(endpoint_id=endpoint_id)
            .select_related("event")
            .only("pk", "attempts", "tenant", "event__public_id", "event__payload")
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("next_attempt_at", "pk")[:limit]
        )
        WebhookDelivery.objects.filter(pk__in=[d.pk for d in batch]).lease(until)
    return batch


def _wake_when_due(endpoint_id: int, rest: bool) -> None:
    """After a slice: another task when more is due now, queued behind every other endpoint's
    (their turn comes first); one with a countdown when a retry is due soon; later retries
    are left to the sweep."""
    pending = WebhookDelivery.objects.filter(
        endpoint_id=endpoint_id, state=WebhookDelivery.State.PENDING
    )
    earliest = pending.aggregate(at=Min("next_attempt_at"))["at"]
    if earliest is None:
        return
    delay = max((earliest - timezone.now()).total_seconds(), TIMEOUT_REST if rest else 0)
    if delay <= 0:
        wake(endpoint_id)
    elif delay <= WAKE_HORIZON:
        # Not marked as queued: new events must not wait for a retry's countdown.
        queue.enqueue(DELIVER_TASK, endpoint_id, countdown=delay)


# --- one request -----------------------------------------------------------------------------


_local = threading.local()


def _session() -> outbound.Session:
    """One per thread (a prefork worker process has one), so a receiver's connection is kept
    alive from one delivery to the next; requests' sessions are not safe to share."""
    session = getattr(_local, "session", None)
    if session is None:
        session = outbound.Session(rules=RULES)
        # One session serves every tenant's receivers: a cookie one of them sets must never
        # reach another, so no domain may set one.
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        # Nor credentials from this machine's .netrc. The environment's proxies are looked up
        # once per slice (_slice) instead of on every request, where it was a quarter of the
        # time a delivery took; its CA bundle, here, once.
        session.trust_env = False
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get(
            "CURL_CA_BUNDLE", True
        )
        _local.session = session
    return session


@dataclass
class Attempt:
    delivery: WebhookDelivery
    started_at: datetime
    duration_ms: int = 0
    status: int | None = None
    error: str = ""
    excerpt: str = ""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def finished_at(self) -> datetime:
        return self.started_at + timedelta(milliseconds=self.duration_ms)

    def row(self) -> DeliveryAttempt:
        return DeliveryAttempt(
            delivery=self.delivery,
            tenant_id=self.delivery.tenant_id,
            started_at=self.started_at,
            duration_ms=self.duration_ms,
            status_code=self.status,
            error=self.error[:500],
            response_excerpt=self.excerpt[:500],
        )


def _send(
    session: outbound.Session,
    endpoint: WebhookEndpoint,
    signers: list[Webhook],
    delivery: WebhookDelivery,
    proxies: dict[str, str],
) -> Attempt:
    event = delivery.event
    body = orjson.dumps(event.payload)
    attempt = Attempt(delivery, started_at=timezone.now())
    clock = time.monotonic()
    headers = {
        "webhook-id": event.public_id,
        "webhook-timestamp": str(int(attempt.started_at.timestamp())),
        # Both secrets sign during a rotation's grace period: a receiver accepts either.
        "webhook-signature": " ".join(
            signer.sign(event.public_id, attempt.started_at, body) for signer in signers
        ),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    try:
        response = session.post(
            endpoint.url,
            data=body,
            headers=headers,
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            stream=True,
            proxies=proxies,
        )
    except requests.RequestException as exc:
        attempt.status, attempt.error, attempt.timed_out = _failure(exc, endpoint.url)
    else:
        attempt.status = response.status_code
        attempt.excerpt = _excerpt(response)
        if not attempt.ok:
            attempt.error = f"HTTP {response.status_code}"
    attempt.duration_ms = int((time.monotonic() - clock) * 1000)
    return attempt


def _failure(exc: requests.RequestException, url: str) -> tuple[int | None, str, bool]:
    """(status, error, timed out) of a request to `url` that raised."""
    host = outbound.host_of(url)
    if isinstance(exc, outbound.Redirected):
        status = exc.response.status_code
        return status, f"HTTP {status}: a redirect, which Graphport does not follow", False
    if isinstance(exc, outbound.InternalHost):
        # Worded as any unreachable host: an administrator must not learn what is inside.
        return None, f"Could not connect to {host}", False
    if isinstance(exc, outbound.Refused):
        return None, str(exc), False
    if isinstance(exc, requests.ConnectTimeout):
        return None, f"No connection to {host} within {CONNECT_TIMEOUT} s", True
    if isinstance(exc, requests.Timeout):
        return None, f"No answer from {host} within {READ_TIMEOUT} s", True
    if isinstance(exc, requests.ConnectionError):
        return None, f"Could not connect to {host}", False
    return None, f"Request to {host} failed ({type(exc).__name__})", False


def _excerpt(response: requests.Response) -> str:
    """The start of the answer, at most EXCERPT_BYTES read. A body read to its end leaves the
    connection for the next delivery; a longer one is cut off with its connection."""
    try:
        data = response.raw.read(EXCERPT_BYTES, decode_content=True)
    except (Urllib3Error, OSError):
        response.close()
        return ""
    if response.raw.isclosed():
        response.raw.release_conn()
    else:
        response.close()
    return data.decode("utf-8", "replace")


# --- settling a batch --------------------------------------------------------------------------


def _settle(endpoint: WebhookEndpoint, attempts: list[Attempt], unsent: list) -> str:
    """Write a batch's outcome in one transaction. Returns why sending must stop, or ""."""
    now = timezone.now()
    failed = [attempt for attempt in attempts if not attempt.ok]
    for attempt in failed:
        retry_in = None if attempt.status == GONE else retry_delay(attempt.delivery.attempts + 1)
        retry_at = None if retry_in is None else attempt.finished_at + timedelta(seconds=retry_in)
        attempt.delivery.record_failure(attempt.status, attempt.error, retry_at)
    failing_since = _failing_since(endpoint.failing_since, attempts)
    reason, notify = _disable_reason(attempts, failing_since, now)
    with transaction.atomic():
        DeliveryAttempt.objects.bulk_create(attempt.row() for attempt in attempts)
        delivered = sorted((a for a in attempts if a.ok), key=lambda a: a.status)
        for status, group in groupby(delivered, key=lambda a: a.status):
            pks = [attempt.delivery.pk for attempt in group]
            WebhookDelivery.objects.filter(pk__in=pks).mark_delivered(status, now)
        WebhookDelivery.objects.bulk_update(
            [attempt.delivery for attempt in failed], WebhookDelivery.FAILURE_FIELDS
        )
        WebhookDelivery.objects.filter(pk__in=[d.pk for d in unsent]).release()
        if failing_since != endpoint.failing_since:
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=failing_since)
            endpoint.failing_since = failing_since
        if reason:
            endpoint.disable(reason)
    for attempt in attempts:
        metrics.WEBHOOK_DELIVERIES.labels(outcome=_outcome(attempt, bool(reason))).inc()
    if notify:
        notices.webhook_endpoint_disabled(endpoint, reason)
    if reason:
        return "disabled"
    return "timeout" if attempts and attempts[-1].timed_out else ""


def _outcome(attempt: Attempt, disabled: bool) -> metrics.DeliveryOutcome:
    """`disabled`: the batch disabled the endpoint, which failed its pending deliveries."""
    if attempt.ok:
        return metrics.DeliveryOutcome.DELIVERED
    if disabled or attempt.delivery.state == WebhookDelivery.State.FAILED:
        return metrics.DeliveryOutcome.FAILED
    return metrics.DeliveryOutcome.RETRYING


def _failing_since(current: datetime | None, attempts: list[Attempt]) -> datetime | None:
    """The first failure since the last success, after these attempts."""
    since = current
    for attempt in attempts:
        if attempt.ok:
            since = None
        elif since is None:
            since = attempt.started_at
    return since


def _disable_reason(
    attempts: list[Attempt], failing_since: datetime | None, now: datetime
) -> tuple[str, bool]:
    """(why the endpoint must be disabled, whether its administrators are e-mailed), or ("",
    False). A 410 is the receiver's own request to stop; days of failures are news to them."""
    gone = next((attempt for attempt in attempts if attempt.status == GONE), None)
    if gone is not None:
        return (
            f"The receiver answered 410 Gone on {gone.started_at:%Y-%m-%d %H:%M} UTC: Graphport "
            "stopped sending. Enable the endpoint to send to it again.",
            False,
        )
    days = settings.WEBHOOK_DISABLE_AFTER_DAYS
    if failing_since is not None and now - failing_since >= timedelta(days=days):
        return (
            f"Every attempt failed from {failing_since:%Y-%m-%d %H:%M} UTC for {days} days "
            f"(the last: {attempts[-1].error}). Enable the endpoint to send to it again.",
            True,
        )
    return "", False


# --- the admin's actions ---------------------------------------------------------------------


def replay(deliveries: QuerySet) -> int:
    """Send these deliveries again with a fresh retry schedule: the same event, so the same
    payload and webhook-id. Those of disabled endpoints, and those being sent right now, are
    left alone. Returns how many will go out."""
    chosen = WebhookDelivery.objects.filter(pk__in=deliveries.values("pk"), endpoint__enabled=True)
    with transaction.atomic():
        endpoints = set(chosen.values_list("endpoint_id", flat=True))
        replayed = chosen.replay(timezone.now())
        for endpoint_id in endpoints:
            wake(endpoint_id)
    return replayed


def replay_failed_since(endpoint: WebhookEndpoint, since: datetime) -> int:
    """Replay the endpoint's failed deliveries of events raised since `since`."""
    failed = WebhookDelivery.objects.filter(
        endpoint=endpoint, state=WebhookDelivery.State.FAILED, created_at__gte=since
    )
    return replay(failed)
