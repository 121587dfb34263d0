"""How far an organisation-wide sync has got: each user's mailbox status from their jobs, and
the organisation's progress through its first load, grouped in the database so that a page
costs the same few queries with ten users or ten thousand (graphsync.admin.orgsync, the
dashboard)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import models
from django.db.models import (
    Case,
    CharField,
    Count,
    Exists,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from graphsync.models import OrgMember, OrgSync, SyncJob, SyncRun

#: the reasons for stopped jobs listed on the organisation's page
TOP_REASONS = 5
THROTTLE_WINDOW = timedelta(hours=1)


class MailboxStatus(models.TextChoices):
    DONE = "done", "Done"
    IN_PROGRESS = "in_progress", "In progress"
    WAITING = "waiting", "Waiting"
    DISABLED = "disabled", "Disabled"


def user_jobs(jobs: QuerySet[SyncJob], *by: str) -> QuerySet:
    """Users' jobs grouped per user (and `by`), each with its mailbox status: disabled when none
    of their jobs is enabled, done when every enabled one has succeeded once, in progress while
    one runs, waiting otherwise. A user without jobs has no row here: waiting."""
    enabled = Q(enabled=True)
    return (
        jobs.exclude(mailbox="")
        .order_by()
        .values(*by, "mailbox")
        .annotate(
            enabled_jobs=Count("pk", filter=enabled),
            unsynced=Count("pk", filter=enabled & Q(last_success_at__isnull=True)),
            running=Count("pk", filter=enabled & Q(state=SyncJob.State.RUNNING)),
            stopped=Count("pk", filter=~enabled),
            stopped_reason=Max("disabled_reason", filter=~enabled),
            records=Sum("live_count"),
            last_success=Max("last_success_at"),
            first_created=Min("created_at"),
        )
        .annotate(
            status=Case(
                When(enabled_jobs=0, then=Value(MailboxStatus.DISABLED)),
                When(unsynced=0, then=Value(MailboxStatus.DONE)),
                When(running__gt=0, then=Value(MailboxStatus.IN_PROGRESS)),
                default=Value(MailboxStatus.WAITING),
                output_field=CharField(),
            )
        )
    )


def in_scope_jobs(jobs: QuerySet[SyncJob]) -> QuerySet[SyncJob]:
    """The jobs of users an organisation-wide sync has in scope now."""
    members = OrgMember.objects.filter(
        org__connection_id=OuterRef("connection_id"),
        graph_id=OuterRef("mailbox"),
        state=OrgMember.State.IN_SCOPE,
    )
    return jobs.filter(Exists(members))


def with_mailbox_status(members: QuerySet[OrgMember]) -> QuerySet[OrgMember]:
    """Members with their mailbox status, records, last success and stopped jobs (one
    correlated subquery each, on the jobs' (connection, mailbox) index)."""
    theirs = user_jobs(
        SyncJob.objects.filter(
            connection_id=OuterRef("org__connection_id"), mailbox=OuterRef("graph_id")
        )
    )

    def column(name: str):
        return Subquery(theirs.values(name))

    return members.annotate(
        mailbox_status=Coalesce(column("status"), Value(MailboxStatus.WAITING)),
        records=Coalesce(column("records"), 0),
        last_success=column("last_success"),
        stopped=Coalesce(column("stopped"), 0),
        stopped_reason=column("stopped_reason"),
    )


@dataclass(frozen=True)
class Progress:
    in_scope: int
    left: int
    done: int
    in_progress: int
    waiting: int
    disabled: int
    partly_stopped: int  # not disabled, but some of their jobs are stopped
    reasons: list[tuple[str, int]]  # why jobs are stopped, and for how many users
    records: int
    throttled: int  # throttled responses in the last THROTTLE_WINDOW
    seconds_left: float | None  # None: no user done yet in this load

    @property
    def to_load(self) -> int:
        return self.done + self.in_progress + self.waiting

    @property
    def loading(self) -> bool:
        return self.in_progress + self.waiting > 0

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.to_load) if self.to_load else 100

    @property
    def time_left(self) -> str:
        if self.seconds_left is None:
            return "no user done yet: the time left shows once one is"
        minutes = round(self.seconds_left / 60)
        if minutes < 1:
            return "less than a minute left"
        hours, minutes = divmod(minutes, 60)
        return f"about {f'{hours} h ' if hours else ''}{minutes} min left"


def progress(org: OrgSync, now: datetime | None = None) -> Progress:
    """The organisation's figures: six queries, seven while a load is under way."""
    now = now or timezone.now()
    members = OrgMember.objects.filter(org=org).aggregate(
        in_scope=Count("pk", filter=Q(state=OrgMember.State.IN_SCOPE)),
        left=Count("pk", filter=Q(state=OrgMember.State.LEFT)),
    )
    jobs = SyncJob.objects.filter(connection_id=org.connection_id).exclude(mailbox="")
    theirs = in_scope_jobs(jobs)
    per_user = user_jobs(theirs)
    unfinished = Q(status__in=[MailboxStatus.IN_PROGRESS, MailboxStatus.WAITING])
    counts = per_user.aggregate(
        done=Count("mailbox", filter=Q(status=MailboxStatus.DONE)),
        in_progress=Count("mailbox", filter=Q(status=MailboxStatus.IN_PROGRESS)),
        disabled=Count("mailbox", filter=Q(status=MailboxStatus.DISABLED)),
        partly=Count("mailbox", filter=Q(stopped__gt=0) & ~Q(status=MailboxStatus.DISABLED)),
        since=Min("first_created", filter=unfinished),
    )
    reasons = (
        theirs.filter(enabled=False)
        .exclude(disabled_reason="")
        .values("disabled_reason")
        .annotate(users=Count("mailbox", distinct=True))
        .order_by("-users", "disabled_reason")[:TOP_REASONS]
    )
    throttled = SyncRun.objects.filter(
        job__in=jobs, started_at__gte=now - THROTTLE_WINDOW
    ).aggregate(n=Sum("throttled"))["n"]
    done, in_progress, disabled = counts["done"], counts["in_progress"], counts["disabled"]
    waiting = max(members["in_scope"] - done - in_progress - disabled, 0)
    return Progress(
        in_scope=members["in_scope"],
        left=members["left"],
        done=done,
        in_progress=in_progress,
        waiting=waiting,
        disabled=disabled,
        partly_stopped=counts["partly"],
        reasons=[(row["disabled_reason"], row["users"]) for row in reasons],
        records=jobs.aggregate(n=Sum("live_count"))["n"] or 0,
        throttled=throttled or 0,
        seconds_left=_seconds_left(per_user, counts["since"], in_progress + waiting, now),
    )


def _seconds_left(per_user: QuerySet, since: datetime | None, left: int, now: datetime):
    """From the rate at which users were done since the first job of this load (the oldest job
    of a user not done yet) was created: a user who joins months after the first load starts a
    load of their own, not one that seems to have crawled for months."""
    if not left or since is None:
        return None
    done = per_user.aggregate(
        n=Count("mailbox", filter=Q(status=MailboxStatus.DONE, first_created__gte=since))
    )["n"]
    elapsed = (now - since).total_seconds()
    if not done or elapsed <= 0:
        return None
    return left * elapsed / done


# --- the settings form --------------------------------------------------------------------------
