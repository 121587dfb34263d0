"""A refresh is recorded in PostgreSQL: Redis going away, restarting, or keeping a stale copy of
a token answer never costs a grant. The emulator plays an identity server with refresh-token
reuse detection, where sending a superseded refresh token cancels the whole grant."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from io import StringIO

import pytest
import redis
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import DatabaseError
from django.db import connection as db_connection
from django.utils import timezone

from connections import connect, tokens
from connections.models import Connection
from core import keys
from devtools.localservices import LocalRedis
from tests.conftest import ADELE, MS_CLIENT_ID
from tests.flows import connected

pytestmark = pytest.mark.django_db(transaction=True)

# Long enough to stop or restart Redis while the token request is at Microsoft.
LATENCY_MS = 3000


@pytest.fixture
def adele(client, microsoft, contoso):
    connection = connected(client, microsoft, contoso.member, contoso.app)
    microsoft.control.settings(refresh_rotation="reuse_detection")
    microsoft.control.reset_counters()
    return connection


@pytest.fixture
def own_redis(settings, tmp_path):
    """A Redis of this test's own, to stop and restart: Graphport's Redis client follows
    settings.REDIS_URL."""
    server = LocalRedis(tmp_path / "redis").start()
    settings.REDIS_URL = server.url
    yield server
    server.stop()


def expire_soon(connection: Connection) -> None:
    Connection.objects.filter(pk=connection.pk).update(
        access_token_expires_at=timezone.now() + timedelta(minutes=1)
    )


def refreshes(microsoft) -> int:
    return microsoft.control.token_request_count(MS_CLIENT_ID, "refresh_token")


def ask(connection_id: int) -> str:
    try:
        return tokens.access_token(connection_id)
    finally:
        db_connection.close()


def kept(connection: Connection) -> bool:
    return bool(
        redis.Redis.from_url(django_settings.REDIS_URL).exists(keys.token_pending(connection.pk))
    )


def keep_an_answer(connection: Connection, monkeypatch) -> None:
    """A refresh whose answer the database refused: the answer is kept in Redis."""

    def broken_write(*args, **kwargs):
        raise DatabaseError("disk full")

    expire_soon(connection)
    with monkeypatch.context() as patch:
        patch.setattr(tokens, "_write", broken_write)
        patch.setattr(tokens.time, "sleep", lambda s: None)
        with pytest.raises(tokens.TransientFailure, match="kept"):
            tokens.refresh(connection.pk)
    assert kept(connection)


def assert_grant_alive(microsoft, connection: Connection, requests_so_far: int) -> None:
    """The stored refresh token is the live one: one more refresh works, and the grant stands."""
    microsoft.control.settings(token_latency_ms=0)
    tokens.refresh(connection.pk, force=True)
    assert refreshes(microsoft) == requests_so_far + 1
    assert Connection.objects.get(pk=connection.pk).status == Connection.Status.ACTIVE


def test_a_redis_restart_mid_refresh_never_sends_a_refresh_token_twice(microsoft, adele, own_redis):
    microsoft.control.settings(token_latency_ms=LATENCY_MS)
    expire_soon(adele)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(ask, adele.pk)
        time.sleep(1)  # the first refresh waits at Microsoft
        own_redis.stop()
        own_redis.start()  # empty: whatever Redis held about the refresh is gone
        second = pool.submit(ask, adele.pk)
        seen = {first.result(timeout=30), second.result(timeout=30)}

    assert refreshes(microsoft) == 1
    stored = Connection.objects.get(pk=adele.pk)
    assert seen == {stored.access_token}
    assert stored.status == Connection.Status.ACTIVE
    assert_grant_alive(microsoft, adele, 1)


def test_tokens_are_stored_when_redis_goes_away_mid_refresh(microsoft, adele, own_redis):
    microsoft.control.settings(token_latency_ms=LATENCY_MS)
    expire_soon(adele)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(ask, adele.pk)
        time.sleep(1)
        own_redis.stop()
        new = first.result(timeout=30)

    stored = Connection.objects.get(pk=adele.pk)
    assert new != adele.access_token and stored.access_token == new
    assert stored.refresh_token != adele.refresh_token
    # Redis still down: the next refresh sends the rotated refresh token, not the old one.
    assert_grant_alive(microsoft, adele, 1)


def test_concurrent_callers_make_exactly_one_refresh_without_redis(microsoft, adele, own_redis):
    own_redis.stop()
    microsoft.control.settings(token_latency_ms=300)
    expire_soon(adele)
    with ThreadPoolExecutor(8) as pool:
        seen = set(pool.map(ask, [adele.pk] * 8))

    assert refreshes(microsoft) == 1
    assert seen == {Connection.objects.get(pk=adele.pk).access_token}
    assert_grant_alive(microsoft, adele, 1)


def test_key_rotation_re_encrypts_the_kept_token_answer(microsoft, adele, settings, monkeypatch):
    keep_an_answer(adele, monkeypatch)
    old_key, new_key = settings.FIELD_ENCRYPTION_KEYS[0], Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out)

    # The old key is gone. The next refresh applies the kept answer and uses its refresh
    # token: the old one was superseded at Microsoft, and sending it would cancel the grant.
    settings.FIELD_ENCRYPTION_KEYS = [new_key]
    assert_grant_alive(microsoft, adele, 1)
    assert not kept(adele)
    assert "Redis: 1 kept token answer(s) re-encrypted" in out.getvalue()


def test_a_kept_answer_no_key_opens_is_dropped_and_refreshes_go_on(
    microsoft, adele, settings, monkeypatch
):
    microsoft.control.settings(refresh_rotation="microsoft")  # the old refresh token still works
    keep_an_answer(adele, monkeypatch)
    # Written under a key that was removed before the copy could be re-encrypted.
    redis.Redis.from_url(settings.REDIS_URL).set(
        keys.token_pending(adele.pk), Fernet(Fernet.generate_key()).encrypt(b"{}")
    )
    old_key, new_key = settings.FIELD_ENCRYPTION_KEYS[0], Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    settings.FIELD_ENCRYPTION_KEYS = [new_key]

    tokens.refresh(adele.pk, force=True)
    assert Connection.objects.get(pk=adele.pk).status == Connection.Status.ACTIVE
    assert not kept(adele)
    assert "1 kept token answer(s) no key opens" in out.getvalue()


def test_disconnect_forgets_the_kept_token_answer(microsoft, contoso, adele, monkeypatch):
    keep_an_answer(adele, monkeypatch)
    connect.disconnect(Connection.objects.get(pk=adele.pk), contoso.member)
    assert not kept(adele)


def test_a_kept_answer_never_overwrites_tokens_written_after_it(
    client, microsoft, contoso, adele, monkeypatch
):
    keep_an_answer(adele, monkeypatch)
    # The grant that answer belongs to ends; the member connects again: a new grant, new tokens.
    microsoft.control.revoke_grant(ADELE, MS_CLIENT_ID)
    again = connected(client, microsoft, contoso.member, contoso.app)
    assert again.pk == adele.pk
    microsoft.control.reset_counters()

    tokens.refresh(adele.pk, force=True)
    stored = Connection.objects.get(pk=adele.pk)
    assert stored.status == Connection.Status.ACTIVE  # the stale answer's token was not sent
    assert refreshes(microsoft) == 1
    assert not kept(adele)
