"""Forgetting what is no longer needed: authorization attempts and audit events past their
retention period (settings RETENTION_*_DAYS; 0 keeps them forever).

Beat purges daily, in batches, so a first purge of millions of rows never holds one long
transaction or one huge lock: each batch is a short DELETE by primary key.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Model
from django.utils import timezone

from connections.models import AuditEvent, AuthorizationAttempt

BATCH = 5_000


def purge(now: datetime | None = None, batch: int = BATCH) -> dict[str, int]:
    """Delete what is past its retention; returns how many rows of each kind went."""
    now = now or timezone.now()
    kept = {
        "authorization attempts": (
            AuthorizationAttempt,
            settings.RETENTION_AUTHORIZATION_ATTEMPTS_DAYS,
        ),
        "audit events": (AuditEvent, settings.RETENTION_AUDIT_EVENTS_DAYS),
    }
    return {
        name: _purge(model, now - timedelta(days=days), batch) if days else 0
        for name, (model, days) in kept.items()
    }


def _purge(model: type[Model], before: datetime, batch: int) -> int:
    # Oldest first, by primary key: rows are created in time order, so each batch is found at
    # the start of the primary-key index.
    deleted = 0
    while True:
        ids = list(
            model.objects.filter(created_at__lt=before)
            .order_by("pk")
            .values_list("pk", flat=True)[:batch]
        )
        if not ids:
            return deleted
        deleted += model.objects.filter(pk__in=ids).delete()[1].get(model._meta.label, 0)
