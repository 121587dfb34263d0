"""Which connections are due for a token refresh, for the beat dispatch (an indexed query)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from connections.models import Connection, EntraApp
from connections.tokens import KEEPALIVE_AFTER, REFRESH_AHEAD

# Look this far ahead each minute, and schedule each refresh for REFRESH_AHEAD before expiry,
# so the refreshes of a fleet spread over time instead of all landing on one beat tick.
LOOKAHEAD = timedelta(minutes=3)
BATCH = 1000


def due(now: datetime | None = None) -> Iterator[tuple[int, float, bool]]:
    """(connection id, seconds from now to refresh at, keep-alive?) for every due connection."""
    now = now or timezone.now()
    horizon = now + REFRESH_AHEAD + LOOKAHEAD
    stale = now - KEEPALIVE_AFTER
    rows = (
        Connection.objects.filter(status=Connection.Status.ACTIVE, app__is_active=True)
        .exclude(app__credentials_status=EntraApp.CredentialStatus.BROKEN)
        .filter(Q(next_refresh_at__isnull=True) | Q(next_refresh_at__lte=now))
        .filter(
            Q(access_token_expires_at__lte=horizon)
            | Q(refresh_after__lte=now)
            | Q(kind=Connection.Kind.DELEGATED, refresh_token_updated_at__lte=stale)
        )
        .values_list("pk", "access_token_expires_at", "refresh_after")
        .order_by("access_token_expires_at")
    )
    for pk, expires_at, refresh_after in rows.iterator(chunk_size=BATCH):
        if refresh_after is not None and refresh_after <= now:
            yield pk, 0.0, False
        elif expires_at is not None and expires_at <= horizon:
            yield pk, max(0.0, (expires_at - REFRESH_AHEAD - now).total_seconds()), False
        else:
            yield pk, 0.0, True
