"""Sync jobs, their runs, and the records they keep."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from connections.models import Connection, Tenant
from core.encryption import EncryptedTextField


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


class SyncJob(models.Model):
    """One resource kept in sync for one connection."""

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

    class Meta:
        ordering = ["connection", "resource", "folder"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "resource", "folder"], name="syncjob_unique_resource"
            )
        ]
        indexes = [models.Index(fields=["enabled", "next_run_at"], name="syncjob_due")]

    def __str__(self) -> str:
        folder = f" {self.folder}" if self.folder else ""
        return f"{self.get_resource_display()}{folder} of {self.connection}"


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

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["job", "-started_at"], name="syncrun_job_recent")]

    def __str__(self) -> str:
        return f"{self.job} at {self.started_at:%Y-%m-%d %H:%M:%S} ({self.outcome})"

    @property
    def duration(self) -> float | None:
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


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

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "graph_id"], name="record_unique_item")
        ]
        indexes = [
            models.Index(fields=["connection", "-id"], name="record_connection_recent"),
            models.Index(fields=["tenant", "-id"], name="record_tenant_recent"),
            models.Index(fields=["graph_id"], name="record_graph_id"),
        ]

    def __str__(self) -> str:
        return self.title or self.graph_id


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
