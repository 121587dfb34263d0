"""Which connections are due for a token refresh, for the beat dispatch (an indexed query)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from connections import tokens
from connections.models import Connection, EntraApp

# Look this far ahead each minute, and schedule each refresh for the moment it is due (its
# token's refresh point, or the end of its backoff), so the refreshes of a fleet spread over
# time instead of landing on beat ticks, and a retry after a transient failure comes when its
# backoff ends rather than up to a minute later, while the access token still works.
LOOKAHEAD = timedelta(minutes=3)
BATCH = 1000
FIELDS = (
    "kind",
    "access_token_expires_at",
    "access_token_lifetime",
    "refresh_after",
    "refresh_token_updated_at",
    "refresh_requested_at",
    "next_refresh_at",
)


def due(now: datetime | None = None) -> Iterator[tuple[int, float, bool]]:
    """(connection id, seconds from now to refresh at, keep-alive?) for every due connection."""
    now = now or timezone.now()
    soon = now + LOOKAHEAD
    # A refresh point is never more than REFRESH_AHEAD before expiry (tokens.refresh_due_at).
    horizon = soon + tokens.REFRESH_AHEAD
    stale = now - tokens.KEEPALIVE_AFTER
    rows = (
        Connection.objects.filter(status=Connection.Status.ACTIVE, app__is_active=True)
        .exclude(app__credentials_status=EntraApp.CredentialStatus.BROKEN)
        .filter(Q(next_refresh_at__isnull=True) | Q(next_refresh_at__lte=soon))
        .filter(
            Q(access_token_expires_at__lte=horizon)
            | Q(refresh_after__lte=soon)
            | Q(kind=Connection.Kind.DELEGATED, refresh_token_updated_at__lte=stale)
        )
        .only(*FIELDS)
        .order_by("access_token_expires_at")
    )
    for connection in rows.iterator(chunk_size=BATCH):
        at = tokens.refresh_due_at(connection)
        keepalive = False
        if at is None or at > soon:
            if not tokens.needs_keepalive(connection, now):
                continue  # a short-lived token not yet due: a later tick schedules it
            at, keepalive = now, True
        held = tokens.held_until(connection)
        if held is not None:
            at = max(at, held)
        yield connection.pk, max(0.0, (at - now).total_seconds()), keepalive
