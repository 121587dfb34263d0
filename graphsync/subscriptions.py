"""Change-notification subscriptions: one per sync job whose resource Graph can watch.

Beat finds the jobs whose subscription is missing, failing, lost or about to expire (`due`), and
each is brought in line by `ensure`, under a per-job Redis lock so a beat tick and a lifecycle
event never create two subscriptions for one job. Microsoft caps each resource's lifetime
(docs/microsoft.md, "Change notifications"); we ask for the longest and renew a day ahead. A
subscription only relaxes polling: the job keeps a safety poll, and whatever goes wrong here
falls back to the schedule.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from urllib.parse import quote

from django.conf import settings
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from connections import tokens
from connections.models import Connection
from core import backoff, keys, redis_client
from core.formatting import plural
from graphsync import resources, scheduling
from graphsync.client import GraphClient, GraphError
from graphsync.models import Subscription, SyncJob
from graphsync.resources import Watch, graph_datetime
from graphsync.throttle import ThrottleWait

logger = logging.getLogger(__name__)

LOCK_SECONDS = 60  # longer than a create with its validation handshake
# Microsoft rejects an expiry past the maximum by its own clock: stay a little inside it.
CLOCK_SLACK = timedelta(minutes=2)
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


def target(job: SyncJob) -> Watch | None:
    """What to subscribe to for a job (graphsync.resources says, per resource)."""
    return resources.spec(job.resource).watch(job)


def can_receive() -> bool:
    """Graph delivers only to https; the emulator also to http, which MICROSOFT_ALLOW_HTTP
    allows for development."""
    base = settings.PORTAL_BASE_URL
    return base.startswith("https://") or (
        base.startswith("http://") and settings.MICROSOFT_ALLOW_HTTP
    )


def notification_url() -> str:
    return settings.PORTAL_BASE_URL + reverse("graph-notifications")


def lifecycle_url() -> str:
    return settings.PORTAL_BASE_URL + reverse("graph-lifecycle")


def _margin() -> timedelta:
    return timedelta(seconds=settings.GRAPH_SUBSCRIPTION_RENEW_MARGIN_SECONDS)


def due(now: datetime | None = None) -> list[int]:
    """Ids of the jobs whose subscription needs work: to create, repair, renew or delete."""
    now = now or timezone.now()
    unwanted = Q(job__enabled=False) | ~Q(job__connection__status__in=Connection.LIVE_STATUSES)
    stale = Subscription.objects.filter(unwanted)
    if not can_receive():
        stale = Subscription.objects.all()
    ids = set(stale.values_list("job_id", flat=True))
    if can_receive():
        ids.update(
            SyncJob.objects.runnable()
            .filter(
                resource__in=resources.watched_resources(),
                subscription__isnull=True,
            )
            .values_list("pk", flat=True)
        )
        retry = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
        ids.update(
            Subscription.objects.filter(
                Q(status__in=[Subscription.Status.FAILED, Subscription.Status.REMOVED]) & retry
                | Q(status=Subscription.Status.ACTIVE, expires_at__lte=now + _margin())
                | Q(status=Subscription.Status.ACTIVE, graph_id__isnull=True)
            )
            .filter(job__enabled=True)
            .values_list("job_id", flat=True)
        )
    return sorted(ids)


# --- bringing one job's subscription in line ---------------------------------------------------


def _lock(job_id: int):
    return redis_client.shared().lock(
        keys.subscription_lock(job_id), timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS
    )


def ensure(job_id: int, renew_now: bool = False) -> str:
    """Create, repair, renew or delete the job's subscription as the job and the portal need.
    Returns what was done, for the task result and the admin."""
    with _lock(job_id):
        job = SyncJob.objects.select_related("connection__app").filter(pk=job_id).first()
        sub = Subscription.objects.filter(job_id=job_id).first()
        wanted = (
            job is not None
            and job.enabled
            and job.connection.status in Connection.LIVE_STATUSES
            and target(job) is not None
            and can_receive()
        )
        if not wanted:
            if sub is None:
                return "none wanted"
            _delete(sub, job.connection if job else None)
            return "deleted"
        if sub is None or sub.status != Subscription.Status.ACTIVE or not sub.graph_id:
            return _create(job, sub)
        if renew_now or sub.expires_at is None or sub.expires_at <= timezone.now() + _margin():
            return _renew(job, sub)
        return "up to date"


def on_lifecycle(graph_id: str, event: str) -> str:
    """React to a lifecycle event (docs/microsoft.md, "Change notifications"): renew when
    Microsoft wants reauthorization, recreate and catch up when it removed the subscription.
    ("missed" needs no Graph call: the receiver starts the catch-up run itself.)"""
    sub = Subscription.objects.filter(graph_id=graph_id).first()
    if sub is None:
        return "unknown subscription"
    if event == "subscriptionRemoved":
        Subscription.objects.filter(pk=sub.pk).update(status=Subscription.Status.REMOVED)
        scheduling.poll_again(sub.job_id)
        done = ensure(sub.job_id)
        scheduling.request_run(sub.job_id)
        return done
    if event == "reauthorizationRequired":
        return ensure(sub.job_id, renew_now=True)
    return "nothing to do"


def delete_for_connection(connection: Connection) -> int:
    """Delete a connection's subscriptions at Microsoft while its token still works (called as
    it is disconnected). One attempt each: the member is waiting, and a subscription we fail
    to delete lapses on its own; its notifications are dropped as unknown meanwhile."""
    subs = list(Subscription.objects.filter(job__connection=connection))
    for sub in subs:
        _delete(sub, connection, attempts=2)
    return len(subs)


def _client(connection: Connection) -> GraphClient:
    return GraphClient(connection)


def _expiry(target_: Watch) -> datetime:
    return timezone.now() + timedelta(minutes=target_.max_minutes) - CLOCK_SLACK


def _expires(body: object, asked: datetime) -> datetime:
    answered = body.get("expirationDateTime") if isinstance(body, dict) else None
    return graph_datetime(answered) or asked


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _create(job: SyncJob, sub: Subscription | None) -> str:
    target_ = target(job)
    assert target_ is not None
    client = _client(job.connection)
    try:
        client_state = secrets.token_urlsafe(48)  # 64 characters; Graph allows 128
        asked = _expiry(target_)
        body = client.request(
            "POST",
            "/subscriptions",
            client.subscription_plan(),
            headers={"Content-Type": "application/json"},
            body={
                "changeType": target_.change_types,
                "notificationUrl": notification_url(),
                "lifecycleNotificationUrl": lifecycle_url(),
                "resource": target_.resource,
                "expirationDateTime": _iso(asked),
                "clientState": client_state,
            },
        )
    except (GraphError, ThrottleWait, tokens.TokenUnavailable) as exc:
        return _failed(job, sub, target_, exc)
    finally:
        client.close()
    # Accepted race: a notification arriving between Microsoft's answer and this write finds no
    # row and is dropped; its change is picked up by the next notification or poll.
    now = timezone.now()
    fields = {
        "tenant_id": job.tenant_id,
        "graph_id": body["id"],
        "resource": target_.resource,
        "change_types": target_.change_types,
        "client_state": client_state,
        "status": Subscription.Status.ACTIVE,
        "expires_at": _expires(body, asked),
        "failure_streak": 0,
        "next_attempt_at": None,
        "last_error": "",
        "renewed_at": now,
    }
    Subscription.objects.update_or_create(job=job, defaults=fields)
    logger.info("job %s: subscribed to %s (%s)", job.pk, target_.resource, body["id"])
    return "created"


def _renew(job: SyncJob, sub: Subscription) -> str:
    target_ = target(job)
    assert target_ is not None
    client = _client(job.connection)
    asked = _expiry(target_)
    try:
        body = client.request(
            "PATCH",
            f"/subscriptions/{quote(sub.graph_id or '', safe='')}",
            client.subscription_plan(),
            headers={"Content-Type": "application/json"},
            body={"expirationDateTime": _iso(asked)},
        )
    except GraphError as exc:
        if exc.status == 404:
            # Microsoft lost it (expired, or removed without telling us): start over, and
            # catch up on whatever changed while nobody was told.
            Subscription.objects.filter(pk=sub.pk).update(status=Subscription.Status.REMOVED)
            sub.status = Subscription.Status.REMOVED
            done = _create(job, sub)
            scheduling.request_run(job.pk)
            return f"recreated ({done})"
        return _renew_failed(sub, exc)
    except (ThrottleWait, tokens.TokenUnavailable) as exc:
        return _renew_failed(sub, exc)
    finally:
        client.close()
    Subscription.objects.filter(pk=sub.pk).update(
        expires_at=_expires(body, asked),
        renewed_at=timezone.now(),
        failure_streak=0,
        last_error="",
    )
    return "renewed"


def _renew_failed(sub: Subscription, exc: Exception) -> str:
    # Still valid until it expires: stay active, and let the next beat tick try again.
    Subscription.objects.filter(pk=sub.pk).update(
        failure_streak=sub.failure_streak + 1, last_error=f"Renewal failed: {exc}"[:2000]
    )
    logger.warning("subscription %s: renewal failed: %s", sub.graph_id, exc)
    return "renewal failed"


def _failed(job: SyncJob, sub: Subscription | None, target_: Watch, exc: Exception) -> str:
    streak = (sub.failure_streak if sub else 0) + 1
    wait = backoff.full_jitter(streak, base=900, cap=6 * 3600)
    fields = {
        "tenant_id": job.tenant_id,
        "graph_id": None,
        "resource": target_.resource,
        "change_types": target_.change_types,
        "client_state": sub.client_state if sub else "",
        "status": Subscription.Status.FAILED,
        "expires_at": None,
        "failure_streak": streak,
        "next_attempt_at": timezone.now() + timedelta(seconds=wait),
        # Said where it shows, with what the job does meanwhile: Microsoft also refuses once a
        # quota is reached (1,000 subscriptions per mailbox for all apps; 100 per app and
        # tenant for users and groups), and the job then polls on its own interval.
        "last_error": (
            f"Could not subscribe, so the job polls every "
            f"{plural(max(round(job.interval_seconds / 60), 1), 'minute')} "
            f"instead (tried again later): {exc}"
        )[:2000],
    }
    Subscription.objects.update_or_create(job=job, defaults=fields)
    scheduling.poll_again(job.pk)
    logger.warning("job %s: could not subscribe to %s: %s", job.pk, target_.resource, exc)
    return "failed"


def _delete(sub: Subscription, connection: Connection | None, attempts: int = 3) -> None:
    if sub.graph_id and sub.status != Subscription.Status.REMOVED and connection is not None:
        client = _client(connection)
        try:
            _delete_at_graph(client, sub.graph_id, attempts)
        except (GraphError, ThrottleWait, tokens.TokenUnavailable) as exc:
            logger.info("subscription %s: not deleted at Microsoft (%s)", sub.graph_id, exc)
        finally:
            client.close()
    Subscription.objects.filter(pk=sub.pk).delete()
    scheduling.poll_again(sub.job_id)


def _delete_at_graph(client: GraphClient, graph_id: str, attempts: int = 3) -> None:
    try:
        client.request(
            "DELETE",
            f"/subscriptions/{quote(graph_id, safe='')}",
            client.subscription_plan(),
            attempts=attempts,
        )
    except GraphError as exc:
        if exc.status != 404:  # already gone is what we wanted
            raise
