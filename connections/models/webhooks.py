"""Outgoing webhooks to a tenant's own backend: its endpoints, the events Graphport raised (a
transactional outbox), and each delivery with its attempts.

Every state change of an endpoint or a delivery is written here (docs/architecture.md,
"Outgoing webhooks"); connections.webhooks decides when, and sends.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timedelta

from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from connections.models.tenants import Tenant
from core.encryption import EncryptedTextField

#: how long the previous signing secret keeps signing after a rotation
SECRET_GRACE = timedelta(hours=24)


def new_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class EventType(models.TextChoices):
    CONNECTION_CREATED = "connection.created", "connection.created"
    CONNECTION_RECONNECT_NEEDED = "connection.reconnect_needed", "connection.reconnect_needed"
    CONNECTION_RECONNECTED = "connection.reconnected", "connection.reconnected"
    CONNECTION_DISCONNECTED = "connection.disconnected", "connection.disconnected"
    APP_CREDENTIALS_BROKEN = "app.credentials_broken", "app.credentials_broken"
    APP_CREDENTIALS_EXPIRING = "app.credentials_expiring", "app.credentials_expiring"
    SYNC_COMPLETED = "sync.completed", "sync.completed"
    SYNC_FAILED = "sync.failed", "sync.failed"
    TEST = "webhook.test", "webhook.test (sent by the admin's test action)"

    @classmethod
    def subscribable(cls) -> list[tuple[str, str]]:
        """The types an endpoint may choose: every one but the admin's test event, which goes
        to the endpoint it was sent to whatever it chose."""
        return [(value, label) for value, label in cls.choices if value != cls.TEST]


#: how long a queued task keeps others off its endpoint; past this it is taken for lost
QUEUED_STALE = timedelta(seconds=60)


class EndpointQuerySet(models.QuerySet):
    def mark_queued(self, pk: int) -> bool:
        """Note that a delivery task for the endpoint is about to be queued; False when one
        is queued already (and not lost), which will send what the caller wanted sent."""
        now = timezone.now()
        unqueued = Q(task_queued_at__isnull=True) | Q(task_queued_at__lt=now - QUEUED_STALE)
        return bool(self.filter(unqueued, pk=pk, enabled=True).update(task_queued_at=now))

    def claim(self, pk: int, owner: str, until: datetime) -> bool:
        """Take the endpoint's lease with a conditional UPDATE: False when another task holds
        it or the endpoint is disabled. A dead worker's lease runs out, then anyone may. The
        queued mark stays while the task runs: what events commit meanwhile, the task claims
        in its next batch, or sees after its release (connections.webhooks.deliver), so they
        need no task of their own, which would only find the endpoint taken."""
        free = Q(leased_until__isnull=True) | Q(leased_until__lt=timezone.now())
        taken = self.filter(free, pk=pk, enabled=True).update(lease_owner=owner, leased_until=until)
        return bool(taken)

    def renew(self, pk: int, owner: str, until: datetime) -> bool:
        """Extend a lease `owner` still holds; False when it has lost it, or when the endpoint
        was disabled meanwhile (its task stops sending at the next batch)."""
        held = self.filter(pk=pk, lease_owner=owner, enabled=True)
        return bool(held.update(leased_until=until))

    def release(self, pk: int, owner: str) -> None:
        """Give the lease up, and the queued mark with it (a task queued while the lease was
        held found it taken and ended): the holder decides next whether another task is due,
        and events from now on may queue one."""
        self.filter(pk=pk, lease_owner=owner).update(
            lease_owner="", leased_until=None, task_queued_at=None
        )

    def needing_a_task(self, now: datetime) -> models.QuerySet:
        """Enabled endpoints that no live task holds and that have deliveries due: those whose
        task was lost, whose worker died, or whose retry time has come."""
        due = WebhookDelivery.objects.filter(
            endpoint=models.OuterRef("pk"),
            state=WebhookDelivery.State.PENDING,
            next_attempt_at__lte=now,
        )
        free = Q(leased_until__isnull=True) | Q(leased_until__lt=now)
        return self.filter(free, models.Exists(due), enabled=True)


class WebhookEndpoint(models.Model):
    """Where a tenant wants its events: a URL, the event types, and the signing secret."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField("URL", max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(
        default=list, blank=True, help_text="The event types sent here; none selected: all."
    )
    enabled = models.BooleanField(default=True)
    include_records = models.BooleanField(
        "Records inline",
        default=False,
        help_text="sync.completed carries the changed records, up to a size limit.",
    )
    # Standard Webhooks secrets (whsec_ and base64). After a rotation the previous one signs too,
    # until previous_secret_until.
    secret = EncryptedTextField(editable=False)
    previous_secret = EncryptedTextField(blank=True, editable=False)
    previous_secret_until = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.TextField(blank=True, editable=False)
    # The first failure since the last success: an endpoint failing everything for days is
    # disabled and its tenant's administrators are told.
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    # The delivery task sending here holds the endpoint until then: one task per endpoint at a
    # time, so its deliveries go out in order and a slow receiver ties up one worker at most.
    lease_owner = models.CharField(max_length=100, blank=True, editable=False)
    leased_until = models.DateTimeField(null=True, blank=True, editable=False)
    # When a delivery task was queued that has not started yet: until it does, new events queue
    # no other (connections.webhooks.wake), so a burst of events is one task, not thousands.
    task_queued_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = EndpointQuerySet.as_manager()

    class Meta:
        verbose_name = "webhook endpoint"
        ordering = ["tenant", "url"]

    def __str__(self) -> str:
        return self.description or self.url

    def wants(self, event_type: str) -> bool:
        return (
            event_type == EventType.TEST or not self.event_types or (event_type in self.event_types)
        )

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets each request is signed with: the current one and, for SECRET_GRACE after
        a rotation, the previous one, so a receiver can switch secrets without a gap."""
        until = self.previous_secret_until
        if self.previous_secret and until is not None and now < until:
            return [self.secret, self.previous_secret]
        return [self.secret]

    def rotate_secret(self) -> str:
        """A new signing secret, returned to be shown once; the current one keeps signing
        alongside it for SECRET_GRACE. Under the row lock, so two rotations at once keep the
        secret that really was current as the previous one."""
        raw = new_secret()
        with transaction.atomic():
            current = WebhookEndpoint.objects.select_for_update().only("secret").get(pk=self.pk)
            rotated = {
                "secret": raw,
                "previous_secret": current.secret,
                "previous_secret_until": timezone.now() + SECRET_GRACE,
            }
            WebhookEndpoint.objects.filter(pk=self.pk).update(**rotated)
        for name, value in rotated.items():
            setattr(self, name, value)
        return raw

    def disable(self, reason: str) -> int:
        """Stop sending here: disabled with `reason` (shown in the admin and on the dashboard),
        and its pending deliveries failed, to be replayed once the receiver works again.
        Returns how many deliveries failed."""
        with transaction.atomic():
            WebhookEndpoint.objects.filter(pk=self.pk).update(enabled=False, disabled_reason=reason)
            failed = WebhookDelivery.objects.filter(
                endpoint=self.pk, state=WebhookDelivery.State.PENDING
            ).update(state=WebhookDelivery.State.FAILED, last_error=reason[:500], leased_until=None)
        self.enabled, self.disabled_reason = False, reason
        return failed

    def enable(self) -> None:
        """Send here again, from a clean slate: no reason, no failing spell."""
        WebhookEndpoint.objects.filter(pk=self.pk).update(
            enabled=True, disabled_reason="", failing_since=None, task_queued_at=None
        )
        self.enabled, self.disabled_reason, self.failing_since = True, "", None


class WebhookEvent(models.Model):
    """One thing that happened, written in the transaction of the change that caused it: a
    rolled-back change leaves no event, a committed one always has its deliveries."""

    public_id = models.CharField(max_length=40, unique=True)  # webhook-id: msg_…
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_events")
    type = models.CharField(max_length=40, choices=EventType.choices)
    payload = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = "webhook event"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.type} {self.public_id}"


class DeliveryQuerySet(models.QuerySet):
    def due(self, now: datetime) -> models.QuerySet:
        """Pending, due, and held by no live worker."""
        free = Q(leased_until__isnull=True) | Q(leased_until__lt=now)
        return self.filter(free, state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now)

    def lease(self, until: datetime) -> int:
        return self.update(leased_until=until)

    def release(self) -> int:
        """Let claimed deliveries go unsent, still due, for the next task."""
        return self.update(leased_until=None)

    def mark_delivered(self, status: int, now: datetime) -> int:
        return self.update(
            state=WebhookDelivery.State.DELIVERED,
            attempts=F("attempts") + 1,
            last_status=status,
            last_error="",
            delivered_at=now,
            leased_until=None,
        )

    def replay(self, now: datetime) -> int:
        """Back to pending with a fresh retry schedule: the same event, so the same payload
        and webhook-id. Deliveries a worker is sending right now are left alone."""
        return self.exclude(leased_until__gt=now).update(
            state=WebhookDelivery.State.PENDING,
            attempts=0,
            next_attempt_at=now,
            leased_until=None,
            delivered_at=None,
        )


class WebhookDelivery(models.Model):
    """One event to one endpoint, until it is delivered or given up."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (retries exhausted or endpoint disabled)"

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # A worker sending it holds it until then; one that died lets it go when this passes.
    leased_until = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = DeliveryQuerySet.as_manager()

    #: what record_failure changes, for the caller's bulk_update
    FAILURE_FIELDS = (
        "state",
        "attempts",
        "next_attempt_at",
        "last_status",
        "last_error",
        "leased_until",
    )

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="delivery_due"),
            models.Index(fields=["endpoint", "state", "next_attempt_at"], name="delivery_endpoint"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.endpoint}"

    def record_failure(self, status: int | None, error: str, retry_at: datetime | None) -> None:
        """This attempt failed: try again at `retry_at`, or give up when it is None. Not saved:
        the caller writes a batch of them at once (FAILURE_FIELDS)."""
        self.attempts += 1
        self.leased_until = None
        self.last_status = status
        self.last_error = error[:500]
        if retry_at is None:
            self.state = self.State.FAILED
        else:
            self.next_attempt_at = retry_at


class DeliveryAttempt(models.Model):
    """One try at sending a delivery: when, how long, what came back."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"attempt at {self.started_at:%Y-%m-%d %H:%M:%S}: {self.status_code or self.error}"
