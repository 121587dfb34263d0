"""Authorization attempts and audit events are forgotten after their retention period."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from django.utils import timezone

from connections import retention
from connections.models import AuditEvent, AuthorizationAttempt
from connections.tasks import purge_history

pytestmark = pytest.mark.django_db


def attempt(world, age: timedelta) -> AuthorizationAttempt:
    created = timezone.now() - age
    return AuthorizationAttempt.objects.create(
        state=secrets.token_urlsafe(32),
        kind=AuthorizationAttempt.Kind.CONNECT,
        user=world.member,
        app=world.app,
        created_at=created,
        expires_at=created + timedelta(minutes=10),
    )


def event(world, age: timedelta) -> AuditEvent:
    return AuditEvent.objects.create(
        tenant=world.tenant,
        app=world.app,
        kind=AuditEvent.Kind.REFRESHED,
        message="Token refreshed.",
        created_at=timezone.now() - age,
    )


def test_purge_deletes_only_what_is_past_retention_in_batches(acme, globex, settings):
    settings.RETENTION_AUTHORIZATION_ATTEMPTS_DAYS = 90
    settings.RETENTION_AUDIT_EVENTS_DAYS = 365
    old_attempts = [
        attempt(world, timedelta(days=91)) for world in (acme, globex) for _ in range(3)
    ]
    recent_attempt = attempt(acme, timedelta(days=89))
    old_event = event(globex, timedelta(days=366))
    recent_event = event(acme, timedelta(days=300))

    assert retention.purge(batch=2) == {"authorization attempts": 6, "audit events": 1}

    assert not AuthorizationAttempt.objects.filter(pk__in=[a.pk for a in old_attempts]).exists()
    assert AuthorizationAttempt.objects.filter(pk=recent_attempt.pk).exists()
    assert not AuditEvent.objects.filter(pk=old_event.pk).exists()
    assert AuditEvent.objects.filter(pk=recent_event.pk).exists()
    assert retention.purge() == {"authorization attempts": 0, "audit events": 0}


def test_zero_days_keeps_everything(acme, settings):
    settings.RETENTION_AUTHORIZATION_ATTEMPTS_DAYS = 0
    settings.RETENTION_AUDIT_EVENTS_DAYS = 0
    attempt(acme, timedelta(days=5000))
    event(acme, timedelta(days=5000))
    assert retention.purge() == {"authorization attempts": 0, "audit events": 0}
    assert AuthorizationAttempt.objects.count() == 1


def test_beat_purges_daily_through_a_task(acme, settings):
    settings.RETENTION_AUTHORIZATION_ATTEMPTS_DAYS = 90
    attempt(acme, timedelta(days=100))
    assert settings.CELERY_BEAT_SCHEDULE["purge-history"]["task"] == purge_history.name
    assert purge_history.apply().get() == {"authorization attempts": 1, "audit events": 0}
