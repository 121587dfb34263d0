"""Sync jobs, their runs, and the records they keep."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Count, F, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from connections.models import Connection, Tenant
from core import metrics
from core.encryption import EncryptedTextField

logger = logging.getLogger(__name__)


class DocumentField(models.JSONField):
    """Graph's JSON as it came, in a `json` column on PostgreSQL rather than Django's `jsonb`.

    Records are written a thousand at a time and never queried inside their document (the
    columns pulled out for display and filtering are), and PostgreSQL stores `json` without
    converting it to `jsonb`'s binary form: about a quarter less database time per row on an
    initial sync (bench/sync_throughput.py). It also keeps the document byte for byte."""

    def db_type(self, connection):
        if connection.vendor == "postgresql":
            return "json"
        return super().db_type(connection)

    def from_db_value(self, value, expression, connection):
        # psycopg parses `json` itself (Django has it hand `jsonb` over as text instead).
        if value is not None and not isinstance(value, str):
            return value
        return super().from_db_value(value, expression, connection)


class Resource(models.TextChoices):
    PROFILE = "profile", "Profile"
    MAIL = "mail", "Mail folder"
    CALENDAR = "calendar", "Calendar"
    CONTACTS = "contacts", "Contacts"
    DRIVE = "drive", "OneDrive"
    USERS = "users", "Directory users"
    GROUPS = "groups", "Directory groups"


MAILBOX_RESOURCES = (Resource.MAIL, Resource.CALENDAR, Resource.CONTACTS)


class SyncJobQuerySet(models.QuerySet):
    """State changes of many jobs at once; SyncJob's methods apply them to one."""

    def runnable(self) -> SyncJobQuerySet:
        """Enabled jobs of connections whose tokens are kept fresh."""
        return self.filter(enabled=True, connection__status__in=Connection.LIVE_STATUSES)

    def make_due(self, at: datetime | None = None) -> int:
        return self.update(next_run_at=at or timezone.now())

    def mark_queued(self, until: datetime) -> int:
        """Handed to a worker: not dispatched again before `until` (the run sets the real next
        time)."""
        return self.update(state=SyncJob.State.QUEUED, next_run_at=until)

    def disable(self, reason: str) -> int:
        return self.update(**SyncJob.disabled_fields(reason))

    def recount(self) -> int:
        """The exact number of live records of each job (one index scan of its rows)."""
        live = Record.objects.filter(job=OuterRef("pk"), deleted_at__isnull=True).values("job")
        return self.update(
            live_count=Coalesce(Subquery(live.annotate(n=Count("pk")).values("n")), 0)
        )

    def claim(self, job_id: int, worker: str) -> SyncJob | None:
        """Take the job's lease with a conditional UPDATE. None when another worker holds it
        or the job is disabled; a dead worker's lease runs out, and then anyone may claim it."""
        now = timezone.now()
        claimed = (
            self.filter(pk=job_id, enabled=True)
            .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
            .update(
                lease_owner=worker,
                state=SyncJob.State.RUNNING,
                last_run_at=now,
                **SyncJob.leased_until(now),
            )
        )
        if not claimed:
            return None
        return self.select_related("connection", "connection__app").get(pk=job_id)

    def renew_leases(self, worker: str) -> int:
        """Extend the leases `worker` still holds among these jobs; returns how many."""
        return self.filter(lease_owner=worker).update(**SyncJob.leased_until(timezone.now()))


class SyncJob(models.Model):
    """One resource kept in sync for one connection.

    Its state changes are written here and only here: a worker claims the job's lease, writes
    while it holds it, and releases it with the state the run ended in; the admin enables and
    disables; the scheduler makes it due."""

    class State(models.TextChoices):
        IDLE = "idle", "Idle"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        WAITING = "waiting", "Waiting (throttled)"
        FAILING = "failing", "Failing (retrying)"
        DISABLED = "disabled", "Disabled"

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="sync_jobs")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    resource = models.CharField(max_length=10, choices=Resource.choices)
    folder = models.CharField(
        max_length=200,
        blank=True,
        help_text="Mail: a well-known folder name (inbox, sentitems, …) or a folder id. "
        "Contacts: a contact folder id (empty: the default folder).",
    )
    # Organisation-wide sync (graphsync.orgsync): the Graph object id of the user whose data an
    # app-only connection reads, as `/users/{id}/…`; empty for the connection's own data (`/me`,
    # or the directory).
    mailbox = models.CharField(max_length=36, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.TextField(blank=True)
    interval_seconds = models.PositiveIntegerField(default=900)
    options = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.IDLE)
    next_run_at = models.DateTimeField(default=timezone.now)
    # The stored @odata.deltaLink between runs, or mid-run the @odata.nextLink of the next page.
    cursor = models.TextField(blank=True)
    cursor_is_delta = models.BooleanField(default=False)
    # Set when the cursor is empty because of a full resync: its end marks unseen records deleted.
    resyncing = models.BooleanField(default=False)
    generation = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    cooldown_until = models.DateTimeField(null=True, blank=True)
    failure_streak = models.PositiveIntegerField(default=0)
    # Live (not deleted) records: moved with every page, recounted exactly when a run ends, so
    # pages showing it never count a million rows.
    live_count = models.PositiveIntegerField(default=0)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = SyncJobQuerySet.as_manager()

    class Meta:
        ordering = ["connection", "mailbox", "resource", "folder"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "mailbox", "resource", "folder"],
                name="syncjob_unique_resource",
            )
        ]
        indexes = [models.Index(fields=["enabled", "next_run_at"], name="syncjob_due")]

    def __str__(self) -> str:
        folder = f" {self.folder}" if self.folder else ""
        mailbox = f" of user {self.mailbox}" if self.mailbox else ""
        return f"{self.get_resource_display()}{folder}{mailbox} of {self.connection}"

    @staticmethod
    def lease() -> timedelta:
        """How long a claim lasts without renewal: a dead worker's job is free after it."""
        return timedelta(seconds=settings.GRAPH_JOB_LEASE_SECONDS)

    @staticmethod
    def leased_until(now: datetime) -> dict[str, datetime]:
        """The fields that take or renew a lease from `now`. While a run holds the job, its
        next run is due when the lease runs out: a run whose worker died is found by the next
        dispatch once the lease is over, not when the queued time set by dispatch has passed
        (the run's end sets the real next time)."""
        until = now + SyncJob.lease()
        return {"lease_expires_at": until, "next_run_at": until}

    @staticmethod
    def disabled_fields(reason: str) -> dict[str, Any]:
        return {"enabled": False, "state": SyncJob.State.DISABLED, "disabled_reason": reason}

    def _self(self) -> SyncJobQuerySet:
        return SyncJob.objects.filter(pk=self.pk)

    def disable(self, reason: str) -> None:
        self._self().disable(reason)

    def enable(self) -> None:
        self._self().update(
            enabled=True,
            state=SyncJob.State.IDLE,
            disabled_reason="",
            failure_streak=0,
            next_run_at=timezone.now(),
        )

    def forget_cursor(self) -> None:
        """The next run reads everything again (a full resync)."""
        self._self().update(cursor="", cursor_is_delta=False)

    def write_held(self, worker: str, **fields: Any) -> bool:
        """Write `fields` while `worker` holds the lease; False when it has lost it."""
        return bool(self._self().filter(lease_owner=worker).update(**fields))

    def release(self, worker: str, **fields: Any) -> bool:
        """Give the lease up, writing the state the run ended in."""
        return self.write_held(worker, lease_owner="", lease_expires_at=None, **fields)

    def lease_left(self) -> float | None:
        """Seconds until the current lease runs out (0 when it has)."""
        if self.lease_expires_at is None:
            return None
        return max((self.lease_expires_at - timezone.now()).total_seconds(), 0.0)


class SyncRunQuerySet(models.QuerySet):
    def open(self, job: SyncJob, trigger: str, worker: str) -> SyncRun:
        """Start a run of a job whose lease `worker` holds."""
        # A run still "running" here belonged to a worker that died: this run carries it on.
        self.filter(job=job, outcome=SyncRun.Outcome.RUNNING).update(
            outcome=SyncRun.Outcome.INTERRUPTED, finished_at=timezone.now()
        )
        return self.create(job=job, tenant_id=job.tenant_id, trigger=trigger, worker=worker[:100])


class SyncRun(models.Model):
    """One execution of a job."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        MANUAL = "manual", "Run now"
        RESYNC = "resync", "Full resync"
        NOTIFICATION = "notification", "Change notification"
        RETRY = "retry", "Retry after throttling"
        FIRST = "first", "First sync"

    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        DEFERRED = "deferred", "Deferred (throttled, re-enqueued)"
        FAILED = "failed", "Failed"
        INTERRUPTED = "interrupted", "Interrupted (worker lost; resumed by a later run)"

    job = models.ForeignKey(SyncJob, on_delete=models.CASCADE, related_name="runs")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    trigger = models.CharField(max_length=12, choices=Trigger.choices)
    worker = models.CharField(max_length=100, blank=True)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(
        max_length=12, choices=Outcome.choices, default=Outcome.RUNNING, db_index=True
    )
    full_resync = models.BooleanField(default=False)
    pages = models.PositiveIntegerField(default=0)
    requests = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    deleted = models.PositiveIntegerField(default=0)
    throttled = models.PositiveIntegerField(default=0)
    seconds_waited = models.FloatField(default=0)
    error = models.TextField(blank=True)
    # The records-feed seqs the run's writes took (graphsync.store): where its changes are in
    # the feed, for the sync.completed event.
    feed_first_seq = models.BigIntegerField(null=True, blank=True)
    feed_last_seq = models.BigIntegerField(null=True, blank=True)

    objects = SyncRunQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["job", "-started_at"], name="syncrun_job_recent")]

    def __str__(self) -> str:
        return f"{self.job} at {self.started_at:%Y-%m-%d %H:%M:%S} ({self.outcome})"

    @property
    def duration(self) -> float | None:
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()

    def _self(self) -> models.QuerySet:
        return SyncRun.objects.filter(pk=self.pk)

    def mark_full_resync(self) -> None:
        self._self().update(full_resync=True)

    def add_page(self, counts: Any, **figures: Any) -> None:
        """Count one committed page (graphsync.store.Counts) and the records-feed seqs it
        took; `figures` are the run's requests, throttled responses and seconds waited so far."""
        seqs = {}
        if counts.first_seq is not None:
            seqs = {
                "feed_first_seq": Coalesce("feed_first_seq", Value(counts.first_seq)),
                "feed_last_seq": Value(counts.last_seq),
            }
        self._self().update(
            pages=F("pages") + 1,
            created=F("created") + counts.created,
            updated=F("updated") + counts.updated,
            deleted=F("deleted") + counts.deleted,
            **seqs,
            **figures,
        )

    def finish(self, outcome: str, error: str = "", **figures: Any) -> None:
        """End the run. Pages move the job's live count as they go, but a record back after a
        deletion counts as updated there: a run that updated anything recounts its job's live
        records (one scan of its index; runs that only add or delete, most of them, skip it)."""
        self._self().update(outcome=outcome, error=error, finished_at=timezone.now(), **figures)
        metrics.SYNC_RUNS.labels(resource=self.job.resource, outcome=outcome).inc()
        logger.info(
            "sync run %s of job %s (%s) %s%s",
            self.pk,
            self.job_id,
            self.job.resource,
            outcome,
            f": {error[:200]}" if error else "",
        )
        self.refresh_from_db()
        if self.updated:
            SyncJob.objects.filter(pk=self.job_id).recount()


class Record(models.Model):
    """One synced Graph item. Unique per job and Graph id; deletions are soft."""

    # The hot table: every page writes up to a thousand rows. The single-column indexes Django
    # would add on these keys are covered by the composite ones below, and connection and
    # tenant are copies of the job's (kept for filtering), so they carry no database constraint
    # of their own; Django still cascades deletes. Each dropped index or check is work saved
    # on every row written.
    job = models.ForeignKey(
        SyncJob, on_delete=models.CASCADE, related_name="records", db_index=False
    )
    connection = models.ForeignKey(
        Connection,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    resource = models.CharField(max_length=10, choices=Resource.choices)
    graph_id = models.CharField(max_length=512)
    change_key = models.CharField(max_length=256, blank=True)
    title = models.CharField(max_length=500, blank=True)
    occurred_at = models.DateTimeField(null=True, blank=True)
    data = DocumentField(default=dict)
    generation = models.PositiveIntegerField(default=0)
    deleted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # The RecordFeed seq of the transaction that last wrote the row (graphsync.store): the
    # records feed's order. Rows written before the feed existed, or by SQL that names no seq
    # (db_default), are at 0.
    feed_seq = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "graph_id"], name="record_unique_item")
        ]
        indexes = [
            models.Index(fields=["connection", "-id"], name="record_connection_recent"),
            models.Index(fields=["tenant", "-id"], name="record_tenant_recent"),
            models.Index(fields=["graph_id"], name="record_graph_id"),
            models.Index(fields=["connection", "resource", "feed_seq", "id"], name="record_feed"),
        ]

    def __str__(self) -> str:
        return self.title or self.graph_id


class RecordFeed(models.Model):
    """The change counter of one connection's records of one resource.

    Every transaction that writes such records first takes this row's lock and the next seq,
    and stamps the rows with it (graphsync.store): seqs are handed out in commit order, which
    record ids and timestamps are not, so the feed (graphsync.feed) can follow them."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    resource = models.CharField(max_length=10, choices=Resource.choices)
    last_seq = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "resource"], name="recordfeed_unique")
        ]

    def __str__(self) -> str:
        return f"{self.get_resource_display()} feed of connection {self.connection_id}"


class Subscription(models.Model):
    """A Graph change-notification subscription for one job, so changes arrive as they happen
    instead of at the next poll (graphsync.subscriptions keeps it alive)."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        FAILED = "failed", "Failed (retried by beat)"
        REMOVED = "removed", "Removed by Microsoft (recreated by beat)"

    job = models.OneToOneField(SyncJob, on_delete=models.CASCADE, related_name="subscription")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    # Empty until Microsoft has created it; NULL keeps the unique index free of blanks.
    graph_id = models.CharField(max_length=100, unique=True, null=True, blank=True)
    resource = models.CharField(max_length=300)
    change_types = models.CharField(max_length=50)
    client_state = EncryptedTextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_notification_at = models.DateTimeField(null=True, blank=True)
    notification_count = models.PositiveIntegerField(default=0)
    lifecycle_count = models.PositiveIntegerField(default=0)
    last_lifecycle_event = models.CharField(max_length=30, blank=True)
    failure_streak = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    renewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["expires_at"]

    def __str__(self) -> str:
        return f"Subscription to {self.resource} ({self.get_status_display()})"


class OrgSync(models.Model):
    """Organisation-wide sync of an app-only connection: who of the Microsoft tenant's users is
    in scope, and what becomes of those who leave it (graphsync.orgsync keeps their jobs)."""

    class Scope(models.TextChoices):
        EVERYONE = "everyone", "Everyone in the directory"
        GROUPS = "groups", "Members of chosen groups"
        LISTED = "listed", "Listed users"

    class Retention(models.TextChoices):
        KEEP = "keep", "Keep their records"
        DELETE = "delete", "Mark their records deleted"

    connection = models.OneToOneField(Connection, on_delete=models.CASCADE, related_name="orgsync")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    enabled = models.BooleanField(
        "organisation-wide sync",
        default=False,
        help_text="Sync the mail, calendars, contacts and OneDrive of every user in scope, as the "
        "app's application permissions allow.",
    )
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.EVERYONE)
    groups = models.JSONField(
        default=list,
        blank=True,
        help_text="Graph object ids of the groups whose members are in scope (scope: groups).",
    )
    users = models.JSONField(
        default=list,
        blank=True,
        help_text="Graph object ids or user principal names of the users in scope (scope: listed).",
    )
    mailbox_only = models.BooleanField(
        "only users with a mailbox",
        default=True,
        help_text="Leave out directory users without an email address (rooms and service "
        "accounts often have one; guests and unlicensed users usually not).",
    )
    retention = models.CharField(
        "when a user leaves the scope",
        max_length=10,
        choices=Retention.choices,
        default=Retention.KEEP,
    )
    alongside_delegated = models.BooleanField(
        "also sync users connected themselves",
        default=False,
        help_text="Off: a user who connected their own account (delegated) is synced through "
        "that connection only, not twice.",
    )
    paused_reason = models.TextField(blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    reconciled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "organisation-wide sync"

    def __str__(self) -> str:
        return f"Organisation-wide sync of {self.connection}"


class OrgMember(models.Model):
    """A directory user an organisation-wide sync has had in scope: their jobs are the app-only
    connection's jobs with `mailbox` = `graph_id`."""

    class State(models.TextChoices):
        IN_SCOPE = "in_scope", "In scope"
        LEFT = "left", "Left the scope"

    org = models.ForeignKey(OrgSync, on_delete=models.CASCADE, related_name="members")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    graph_id = models.CharField(max_length=36)
    user_principal_name = models.CharField(max_length=255, blank=True)
    display_name = models.CharField(max_length=255, blank=True)
    mail = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.IN_SCOPE)
    left_reason = models.CharField(max_length=200, blank=True)
    joined_at = models.DateTimeField(default=timezone.now)
    left_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "organisation member"
        ordering = ["user_principal_name"]
        constraints = [models.UniqueConstraint(fields=["org", "graph_id"], name="orgmember_unique")]
        indexes = [models.Index(fields=["org", "state"], name="orgmember_state")]

    def __str__(self) -> str:
        return self.user_principal_name or self.display_name or self.graph_id
