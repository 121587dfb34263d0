"""Finding due jobs fairly: every tenant gets its turn on each beat tick, so one tenant with ten
thousand connections, or an organisation-wide sync onboarding thousands of mailboxes, cannot
starve the others.

Each tenant may have PER_TENANT jobs queued or running at once; a tick tops each tenant up to
that, oldest due first, the tenants interleaved. First loads (no delta link yet) go to the
`bulk` queue, incremental runs to `sync`: a worker takes from both in turn, so one tenant's
onboarding never sits in front of another tenant's new mail.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Count, F, Min, Q, QuerySet, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from core import keys, redis_client
from graphsync.models import SyncJob

# Jobs of one tenant queued or running at once: enough to keep the workers busy between two
# ticks, few enough that no tenant's backlog fills the queues.
PER_TENANT = 200
PER_TICK = 2000
# A queued job is not dispatched again for this long, in case its task is lost (a Redis restart
# without persistence): long enough for a backlog of syncs to drain without duplicates. Once a
# run claims the job, its lease replaces this time (SyncJob.leased_until): a run whose worker
# died is dispatched again as soon as the lease has run out, not ten minutes on.
QUEUED_GRACE = timedelta(minutes=10)
BATCH_GROUP = 4
BULK_QUEUE = "bulk"
# While due jobs wait for room, a run that ends asks for a dispatch, at most this often.
REFILL_EVERY = 0.5
# How long a backlog is believed without a dispatch confirming it (beat ticks every 10 s).
BACKLOG_SECONDS = 15


def in_flight(now: datetime) -> dict[int, int]:
    """Per tenant, its jobs queued (and not yet lost: QUEUED_GRACE) or running (lease live)."""
    busy = SyncJob.objects.filter(
        Q(state=SyncJob.State.QUEUED, next_run_at__gt=now)
        | Q(state=SyncJob.State.RUNNING, lease_expires_at__gt=now)
    )
    return dict(busy.values("tenant_id").annotate(n=Count("pk")).values_list("tenant_id", "n"))


def dispatchable(now: datetime) -> QuerySet[SyncJob]:
    """Jobs due now that nothing holds: no live lease, no cooldown."""
    return (
        SyncJob.objects.runnable()
        .filter(next_run_at__lte=now)
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
        .filter(Q(cooldown_until__isnull=True) | Q(cooldown_until__lte=now))
    )


def lag(now: datetime | None = None) -> float:
    """Seconds the longest-waiting dispatchable job has been due, 0 when none is: how far
    dispatch is behind (beat ticks every 10 s), a tenant's jobs waiting for room included."""
    now = now or timezone.now()
    oldest = dispatchable(now).aggregate(oldest=Min("next_run_at"))["oldest"]
    return (now - oldest).total_seconds() if oldest else 0.0


def due(now: datetime | None = None) -> list[tuple[int, int, bool]]:
    """Due jobs as (id, connection id, incremental?), interleaved across tenants (each tenant's
    oldest first, up to its room under PER_TENANT), and marked queued."""
    return take(now)[0]


def take(now: datetime | None = None) -> tuple[list[tuple[int, int, bool]], bool]:
    """`due`, and whether due jobs were left for lack of room: then the room that running jobs
    free is worth filling before beat's next tick (graphsync.tasks)."""
    now = now or timezone.now()
    busy = in_flight(now)
    ranked = (
        dispatchable(now)
        .annotate(
            rank=Window(RowNumber(), partition_by=[F("tenant_id")], order_by=F("next_run_at").asc())
        )
        # One past the cap: a tenant with more due than room shows it (`left`).
        .filter(rank__lte=PER_TENANT + 1)
        .order_by("rank", "next_run_at")
        .values_list("pk", "connection_id", "cursor_is_delta", "tenant_id", "rank")[
            # In rank order, the rows left out for a tenant's lack of room are at most its jobs
            # in flight: this many rows hold PER_TICK kept ones.
            : PER_TICK + sum(busy.values())
        ]
    )
    rows, left = [], False
    for pk, connection_id, incremental, tenant_id, rank in ranked:
        if rank <= PER_TENANT - busy.get(tenant_id, 0) and len(rows) < PER_TICK:
            rows.append((pk, connection_id, incremental))
        else:
            left = True
    SyncJob.objects.filter(pk__in=[pk for pk, _, _ in rows]).mark_queued(now + QUEUED_GRACE)
    return rows, left


def plan(rows: list[tuple[int, int, bool]]) -> list[list[int]]:
    """Group the incremental jobs of one connection for a $batch (at most 20 requests, and at
    most 4 of one mailbox: Outlook runs no more at once); every other job runs alone. The
    tenants' interleaving is kept: groups come in the order of their first job."""
    groups: dict[int, list[int]] = {}
    order: list[list[int]] = []
    for pk, connection_id, incremental in rows:
        group = groups.get(connection_id) if incremental else None
        if group is not None and len(group) < BATCH_GROUP:
            group.append(pk)
            continue
        group = [pk]
        order.append(group)
        if incremental:
            groups[connection_id] = group
    return order


def note_backlog(left: bool) -> None:
    """After a dispatch: whether due jobs were left for lack of room."""
    if left:
        redis_client.shared().set(keys.dispatch_backlog(), "1", ex=BACKLOG_SECONDS)
    else:
        redis_client.shared().delete(keys.dispatch_backlog())


def room_freed() -> bool:
    """A run ended: True when due jobs wait for room and no other run asked for a dispatch in
    the last REFILL_EVERY seconds (the caller then asks)."""
    shared = redis_client.shared()
    if not shared.exists(keys.dispatch_backlog()):
        return False
    return bool(shared.set(keys.dispatch_soon(), "1", nx=True, px=int(REFILL_EVERY * 1000)))
