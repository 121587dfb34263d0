"""The beat dispatch picks up exactly the due connections, and refreshes them through workers."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from connections import fleet
from connections.models import Connection, EntraApp
from connections.tasks import dispatch_token_refreshes

pytestmark = pytest.mark.django_db(transaction=True)


def make(app, n, **fields):
    defaults = {
        "ms_tenant_id": "11111111-1111-1111-1111-111111111111",
        "access_token": "a",
        "refresh_token": "r",
        "access_token_expires_at": timezone.now() + timedelta(hours=1),
        "refresh_token_updated_at": timezone.now(),
    }
    defaults.update(fields)
    return Connection.objects.create(app=app, ms_object_id=f"oid-{n}", **defaults).pk


def test_due_picks_exactly_the_connections_that_need_a_refresh(acme, globex):
    now = timezone.now()
    app = acme.app
    soon = make(app, 1, access_token_expires_at=now + timedelta(minutes=6))
    expired = make(app, 2, access_token_expires_at=now - timedelta(minutes=1))
    idle = make(app, 3, refresh_token_updated_at=now - timedelta(days=15))
    asked = make(app, 4, refresh_after=now - timedelta(seconds=1))
    # Not due: fresh, backing off, needing a reconnect, disabled, or of a paused app.
    make(app, 5)
    make(app, 6, access_token_expires_at=now, next_refresh_at=now + timedelta(minutes=5))
    make(app, 7, access_token_expires_at=now, status=Connection.Status.RECONNECT_NEEDED)
    make(app, 8, access_token_expires_at=now, status=Connection.Status.DISABLED)
    EntraApp.objects.filter(pk=globex.app.pk).update(
        credentials_status=EntraApp.CredentialStatus.BROKEN
    )
    make(globex.app, 9, access_token_expires_at=now)

    due = {pk: (countdown, keepalive) for pk, countdown, keepalive in fleet.due(now)}
    assert set(due) == {soon, expired, idle, asked}
    assert 50 < due[soon][0] <= 60  # scheduled five minutes before expiry
    assert due[expired] == (0.0, False)
    assert due[idle] == (0.0, True)
    assert due[asked] == (0.0, False)


def test_dispatch_refreshes_due_connections_once_each(celery_worker, client, microsoft, contoso):
    from tests.conftest import ALEX
    from tests.flows import connected

    adele = connected(client, microsoft, contoso.member, contoso.app)
    alex = connected(client, microsoft, contoso.other, contoso.app, user=ALEX)
    Connection.objects.filter(pk__in=[adele.pk, alex.pk]).update(
        access_token_expires_at=timezone.now() + timedelta(minutes=2)
    )
    microsoft.control.reset_counters()
    assert dispatch_token_refreshes.delay().get(timeout=30) == 2
    assert dispatch_token_refreshes.delay().get(timeout=30) == 0  # already queued
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        fresh = Connection.objects.filter(
            pk__in=[adele.pk, alex.pk],
            access_token_expires_at__gt=timezone.now() + timedelta(minutes=30),
        ).count()
        if fresh == 2:
            break
        time.sleep(0.2)
    assert fresh == 2
    assert microsoft.control.token_request_count(contoso.app.client_id, "refresh_token") == 2


def test_due_schedules_a_short_lived_token_at_half_its_lifetime(acme):
    now = timezone.now()
    # A four-minute token issued a minute ago: due at two minutes, not at once.
    short = make(
        acme.app,
        1,
        access_token_expires_at=now + timedelta(minutes=3),
        access_token_lifetime=240,
    )
    # A nine-minute token issued a minute ago is due in three and a half minutes: a later tick.
    make(
        acme.app,
        2,
        access_token_expires_at=now + timedelta(minutes=8),
        access_token_lifetime=540,
    )

    due = {pk: (countdown, keepalive) for pk, countdown, keepalive in fleet.due(now)}
    assert due == {short: (60.0, False)}


def test_due_schedules_a_retry_for_the_end_of_its_backoff(acme):
    now = timezone.now()
    expiring = now + timedelta(minutes=2)
    backing_off = make(
        acme.app, 1, access_token_expires_at=expiring, next_refresh_at=now + timedelta(seconds=40)
    )
    just_asked = make(
        acme.app,
        2,
        access_token_expires_at=expiring,
        refresh_requested_at=now - timedelta(seconds=10),
    )

    due = {pk: countdown for pk, countdown, _ in fleet.due(now)}
    # Scheduled for the moment each may ask again, not left for a later beat tick.
    assert due == {backing_off: 40.0, just_asked: 20.0}
