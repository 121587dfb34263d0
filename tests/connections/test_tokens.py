"""Token lifecycle against the emulator, real Redis and real Celery workers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.core import mail
from django.db import DatabaseError
from django.db import connection as db_connection
from django.utils import timezone

from connections import credentials, tokens
from connections.models import AuditEvent, ClientSecret, Connection, EntraApp
from connections.tasks import refresh_connection
from core import keys
from tests.conftest import ADELE, MS_CLIENT_ID, MS_SECRET_ID, MS_TENANT
from tests.flows import connected

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def adele(client, microsoft, contoso):
    connection = connected(client, microsoft, contoso.member, contoso.app)
    microsoft.control.reset_counters()
    return connection


def expire_soon(connection: Connection, minutes: float = 1) -> None:
    Connection.objects.filter(pk=connection.pk).update(
        access_token_expires_at=timezone.now() + timedelta(minutes=minutes)
    )


def refreshes(microsoft) -> int:
    return microsoft.control.token_request_count(MS_CLIENT_ID, "refresh_token")


def test_a_fresh_token_is_returned_without_a_request(microsoft, adele):
    assert tokens.access_token(adele.pk) == adele.access_token
    assert refreshes(microsoft) == 0


def test_an_expiring_token_is_refreshed_and_both_tokens_stored(microsoft, adele):
    expire_soon(adele)
    new = tokens.access_token(adele.pk)
    assert new != adele.access_token
    assert refreshes(microsoft) == 1
    stored = Connection.objects.get(pk=adele.pk)
    assert stored.access_token == new
    assert stored.refresh_token != adele.refresh_token
    assert stored.access_token_expires_at > timezone.now() + timedelta(minutes=30)
    assert microsoft.control.introspect(new)["user_id"] == ADELE


def test_concurrent_callers_make_exactly_one_refresh(celery_worker, microsoft, adele):
    # Reuse detection: replaying a rotated refresh token would revoke the whole grant.
    microsoft.control.settings(refresh_rotation="reuse_detection")
    expire_soon(adele)

    def ask(_):
        try:
            return tokens.access_token(adele.pk)
        finally:
            db_connection.close()

    queued = [refresh_connection.delay(adele.pk) for _ in range(4)]
    with ThreadPoolExecutor(8) as pool:
        seen = set(pool.map(ask, range(8)))
    results = [result.get(timeout=60) for result in queued]

    assert results == ["ok"] * 4
    assert refreshes(microsoft) == 1
    assert len(seen) == 1
    stored = Connection.objects.get(pk=adele.pk)
    assert stored.status == Connection.Status.ACTIVE and stored.access_token in seen
    # The stored refresh token is the live one: the next refresh succeeds.
    tokens.refresh(adele.pk, force=True)
    assert refreshes(microsoft) == 2
    assert Connection.objects.get(pk=adele.pk).status == Connection.Status.ACTIVE


def test_revoked_grant_needs_a_reconnect_and_is_not_retried(microsoft, contoso, adele):
    microsoft.control.revoke_grant(ADELE, MS_CLIENT_ID)
    expire_soon(adele)
    with pytest.raises(tokens.ReconnectNeeded):
        tokens.access_token(adele.pk)
    stored = Connection.objects.get(pk=adele.pk)
    assert stored.status == Connection.Status.RECONNECT_NEEDED
    assert "AADSTS" in stored.status_reason
    assert mail.outbox and mail.outbox[-1].to == [contoso.member.email]
    assert "/connections/" in mail.outbox[-1].body
    # Never again by itself: the next call fails without asking Microsoft.
    with pytest.raises(tokens.ReconnectNeeded):
        tokens.access_token(adele.pk)
    assert refreshes(microsoft) == 1


def test_mfa_required_needs_a_reconnect(microsoft, adele):
    microsoft.control.require_mfa(ADELE)
    expire_soon(adele)
    with pytest.raises(tokens.ReconnectNeeded, match="AADSTS50076"):
        tokens.access_token(adele.pk)


def test_expired_secret_flags_the_app_not_the_connections(microsoft, contoso, adele):
    microsoft.control.set_secret_expiry(MS_CLIENT_ID, MS_SECRET_ID, expired=True)
    expire_soon(adele)
    with pytest.raises(tokens.AppCredentialsBroken, match="AADSTS7000222"):
        tokens.access_token(adele.pk)
    app = EntraApp.objects.get(pk=contoso.app.pk)
    stored = Connection.objects.get(pk=adele.pk)
    assert app.credentials_status == EntraApp.CredentialStatus.BROKEN
    assert stored.status == Connection.Status.APP_CREDENTIALS_BROKEN
    assert stored.refresh_token == adele.refresh_token  # tokens kept
    assert [m.to for m in mail.outbox] == [[contoso.admin.email]]

    # Paused: no more requests while the credentials are broken.
    with pytest.raises(tokens.AppCredentialsBroken):
        tokens.access_token(adele.pk)
    assert refreshes(microsoft) == 1

    # The admin creates a new secret in Azure, adds it here and verifies: refreshes resume.
    new = microsoft.control.add_secret(MS_CLIENT_ID)
    ClientSecret.objects.create(
        app=app, value=new["value"], hint=new["value"][:3], expires_on="2031-01-01"
    )
    result = credentials.verify(EntraApp.objects.get(pk=app.pk))
    assert result.ok is True
    assert "works" in result.message and "AADSTS7000222" in result.message  # old one listed
    assert Connection.objects.get(pk=adele.pk).status == Connection.Status.ACTIVE
    assert tokens.access_token(adele.pk) != adele.access_token
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.APP_RESUMED).exists()


def test_transient_failures_back_off_and_alert_after_a_streak(microsoft, contoso, adele):
    microsoft.control.token_outage(status=503, count=100)
    expire_soon(adele)
    for streak in range(1, tokens.ALERT_STREAK + 1):
        with pytest.raises(tokens.TransientFailure):
            tokens.refresh(adele.pk)
        stored = Connection.objects.get(pk=adele.pk)
        assert stored.status == Connection.Status.ACTIVE and stored.failure_streak == streak
        assert stored.next_refresh_at > timezone.now() - timedelta(seconds=1)
    assert any("failed 5 times" in m.subject for m in mail.outbox)
    microsoft.control.clear_token_outage()
    tokens.refresh(adele.pk)
    stored = Connection.objects.get(pk=adele.pk)
    assert stored.failure_streak == 0 and stored.next_refresh_at is None


def test_a_failed_database_write_keeps_the_new_refresh_token(microsoft, adele, monkeypatch):
    microsoft.control.settings(refresh_rotation="reuse_detection")
    expire_soon(adele)

    def broken_write(*args, **kwargs):
        raise DatabaseError("disk full")

    monkeypatch.setattr(tokens, "_write", broken_write)
    monkeypatch.setattr(tokens.time, "sleep", lambda s: None)
    with pytest.raises(tokens.TransientFailure, match="kept"):
        tokens.refresh(adele.pk)
    assert Connection.objects.get(pk=adele.pk).refresh_token == adele.refresh_token  # old
    monkeypatch.undo()

    # The next refresh applies the kept answer first, then uses its refresh token: with reuse
    # detection, using the old one would have revoked the grant.
    tokens.refresh(adele.pk, force=True)
    stored = Connection.objects.get(pk=adele.pk)
    assert stored.status == Connection.Status.ACTIVE
    assert refreshes(microsoft) == 2
    assert not redis.Redis.from_url(settings.REDIS_URL).exists(keys.token_pending(adele.pk))


def test_keepalive_refreshes_an_idle_refresh_token(microsoft, adele):
    Connection.objects.filter(pk=adele.pk).update(
        refresh_token_updated_at=timezone.now() - timedelta(days=15)
    )
    tokens.refresh(adele.pk, keepalive=True)
    assert refreshes(microsoft) == 1
    stored = Connection.objects.get(pk=adele.pk)
    assert timezone.now() - stored.refresh_token_updated_at < timedelta(minutes=1)
    tokens.refresh(adele.pk, keepalive=True)  # fresh again: nothing to do
    assert refreshes(microsoft) == 1


def test_app_only_connections_get_a_new_client_credentials_token(client, microsoft, contoso):
    from django.urls import reverse

    from tests.flows import follow_back

    client.force_login(contoso.admin)
    consent = client.post(reverse("connections:admin_consent", args=[contoso.app.pk]))
    follow_back(client, microsoft.control.sign_in(consent["Location"], ADELE))
    app_only = Connection.objects.get(kind=Connection.Kind.APPLICATION)
    expire_soon(app_only)
    token = tokens.access_token(app_only.pk)
    assert token != app_only.access_token
    assert microsoft.control.introspect(token)["tenant_id"] == MS_TENANT
    assert microsoft.control.token_request_count(MS_CLIENT_ID, "client_credentials") == 2


def test_a_paused_app_still_hands_out_tokens_that_are_valid(microsoft, contoso, adele):
    EntraApp.objects.filter(pk=contoso.app.pk).update(
        credentials_status=EntraApp.CredentialStatus.BROKEN
    )
    Connection.objects.filter(pk=adele.pk).update(
        status=Connection.Status.APP_CREDENTIALS_BROKEN,
        access_token_expires_at=timezone.now() + timedelta(minutes=3),
    )
    assert tokens.access_token(adele.pk) == adele.access_token  # still good for 3 minutes
    expire_soon(adele, minutes=0.5)
    with pytest.raises(tokens.AppCredentialsBroken):
        tokens.access_token(adele.pk)
    assert refreshes(microsoft) == 0
