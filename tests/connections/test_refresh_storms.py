"""However many callers ask, and whatever the token endpoint does, a connection sends few token
requests: short-lived tokens are refreshed at half their life, paced callers wait out backoffs
and the minimum interval, and backoffs leave tries before the access token expires."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.utils import timezone

from connections import tokens
from connections.models import Connection
from core import backoff
from tests.conftest import MS_CLIENT_ID
from tests.flows import connected

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 8


@pytest.fixture
def adele(client, microsoft, contoso):
    connection = connected(client, microsoft, contoso.member, contoso.app)
    microsoft.control.reset_counters()
    return connection


def refreshes(microsoft) -> int:
    return microsoft.control.token_request_count(MS_CLIENT_ID, "refresh_token")


def expires_in(connection: Connection, delta: timedelta) -> None:
    Connection.objects.filter(pk=connection.pk).update(
        access_token_expires_at=timezone.now() + delta
    )


def hammer(connection_id: int, calls: int = 1, seconds: float = 0) -> list[str | Exception]:
    """THREADS callers asking for a token `calls` times each, or for `seconds`: each answer, a
    token or the TokenUnavailable it raised."""

    def caller(_):
        answers: list[str | Exception] = []
        deadline = time.monotonic() + seconds
        try:
            while len(answers) < calls or time.monotonic() < deadline:
                try:
                    answers.append(tokens.access_token(connection_id))
                except tokens.TokenUnavailable as exc:
                    answers.append(exc)
        finally:
            db_connection.close()
        return answers

    with ThreadPoolExecutor(THREADS) as pool:
        return [answer for answers in pool.map(caller, range(THREADS)) for answer in answers]


def test_a_token_shorter_lived_than_the_margin_is_refreshed_once_per_half_life(
    client, microsoft, contoso
):
    microsoft.control.settings(access_token_lifetime=240)  # four minutes, under the margin
    adele = connected(client, microsoft, contoso.member, contoso.app)
    microsoft.control.reset_counters()
    assert tokens.access_token(adele.pk) == adele.access_token  # fresh for half its life
    assert refreshes(microsoft) == 0

    expires_in(adele, timedelta(seconds=90))  # two and a half minutes later
    answers = hammer(adele.pk, calls=25)

    assert refreshes(microsoft) == 1
    stored = Connection.objects.get(pk=adele.pk)
    assert set(answers) == {stored.access_token} and stored.access_token != adele.access_token


def test_a_token_shorter_lived_than_the_interval_gets_one_request_per_interval(
    client, microsoft, contoso
):
    microsoft.control.settings(access_token_lifetime=2)
    adele = connected(client, microsoft, contoso.member, contoso.app)
    microsoft.control.reset_counters()
    expires_in(adele, timedelta(0))

    answers = hammer(adele.pk, seconds=3)

    assert refreshes(microsoft) == 1
    waits = [a.retry_in for a in answers if isinstance(a, tokens.TransientFailure)]
    assert waits, "callers past the new token's refresh point are told when to retry"
    assert all(0 < wait <= tokens.MIN_REFRESH_INTERVAL.total_seconds() for wait in waits)
    assert all(isinstance(a, str | tokens.TransientFailure) for a in answers)


def test_callers_during_a_backoff_get_the_still_valid_token_and_one_request_goes_out(
    microsoft, adele
):
    microsoft.control.token_outage(status=503, count=100)
    expires_in(adele, timedelta(minutes=3))  # due, and good for three more minutes

    answers = hammer(adele.pk, calls=5)

    assert refreshes(microsoft) == 1
    assert set(answers) == {adele.access_token}
    stored = Connection.objects.get(pk=adele.pk)
    assert stored.failure_streak == 1 and stored.next_refresh_at > timezone.now()


def test_callers_during_a_backoff_without_a_valid_token_are_told_when_to_retry(microsoft, adele):
    microsoft.control.token_outage(status=503, count=100)
    expires_in(adele, timedelta(seconds=30))

    answers = hammer(adele.pk, calls=3)

    assert refreshes(microsoft) == 1
    assert all(isinstance(a, tokens.TransientFailure) for a in answers)
    stored = Connection.objects.get(pk=adele.pk)
    retry_at = (stored.next_refresh_at - timezone.now()).total_seconds()
    assert all(0 < a.retry_in <= retry_at + 1 for a in answers)


def test_five_transient_failures_in_a_row_leave_time_to_retry_before_expiry(
    microsoft, adele, monkeypatch
):
    monkeypatch.setattr(backoff.random, "uniform", lambda low, high: high)  # the longest waits
    microsoft.control.token_outage(status=503, count=100)
    life = timedelta(minutes=5)  # refreshes start five minutes before expiry
    expires_in(adele, life)
    waited = timedelta(0)
    # Each wait: the minimum interval (30 s), or a quarter of the token's life left if longer.
    for _ in range(5):
        before = timezone.now()
        with pytest.raises(tokens.TransientFailure):
            tokens.refresh(adele.pk)
        stored = Connection.objects.get(pk=adele.pk)
        gap = stored.next_refresh_at - before
        left = stored.access_token_expires_at - before
        assert gap <= max(timedelta(seconds=30), left / 4) + timedelta(seconds=1)
        # The backoff passes: the token has that much less life left.
        waited += gap
        expires_in(adele, life - waited)
    assert waited < life - tokens.STILL_VALID_MARGIN  # a sixth try comes while the token works
    assert refreshes(microsoft) == 5


def test_paced_refresh_tasks_during_a_backoff_send_nothing(microsoft, adele):
    microsoft.control.token_outage(status=503, count=100)
    expires_in(adele, timedelta(minutes=3))
    with pytest.raises(tokens.TransientFailure):
        tokens.refresh(adele.pk, paced=True)
    for _ in range(3):
        assert tokens.refresh(adele.pk, paced=True).access_token == adele.access_token
    assert refreshes(microsoft) == 1
