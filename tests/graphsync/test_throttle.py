"""Throttle budgets against a real redis-server: concurrency, windows, cooldowns, leases, waits.

No database: these run with or without pytest-django.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
import redis

from core.backoff import full_jitter
from devtools.localservices import LocalRedis
from graphsync.budgets import Budget, directory_cost
from graphsync.throttle import (
    MAX_COOLDOWN_SECONDS,
    Grant,
    Scope,
    Throttle,
    ThrottleWait,
    Wait,
    retry_after_seconds,
)

pytestmark = pytest.mark.timeout(60)

APP = "11111111-2222-4333-8444-555555555555"
TENANT = "aaaaaaaa-0000-4000-8000-000000000001"
OUTLOOK_LIKE = Budget(max_in_flight=4, limit=100_000, window=600)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    server = LocalRedis(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture
def client(redis_url):
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def prefix():
    return f"test:{uuid.uuid4().hex}:"


@pytest.fixture
def throttle(client, prefix):
    return Throttle(client, key_prefix=prefix)


@pytest.fixture
def other_worker(redis_url, prefix):
    """A second worker: its own connection, the same Redis and key prefix."""
    connection = redis.Redis.from_url(redis_url)
    yield Throttle(connection, key_prefix=prefix)
    connection.close()


@pytest.fixture
def mailbox():
    return Scope.mailbox(APP, f"user-{uuid.uuid4().hex[:8]}")


def server_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1_000_000


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    # An end sorts before a start at the same instant: touching intervals do not overlap.
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def hammer(redis_url: str, prefix: str, scope: Scope, threads: int, seconds: float):
    """Threads taking and holding slots on one scope; returns when each was really held."""
    throttle = Throttle(redis.Redis.from_url(redis_url), key_prefix=prefix, poll_interval=0.001)
    intervals: list[tuple[float, float]] = []
    until = time.time() + seconds

    def work() -> None:
        while time.time() < until:
            answer = throttle.acquire({scope: OUTLOOK_LIKE}, lease_seconds=30)
            if isinstance(answer, Wait):
                time.sleep(answer.seconds)
                continue
            # Measured inside the grant, so each interval lies within its lease.
            started = time.time()
            time.sleep(random.uniform(0.002, 0.01))
            intervals.append((started, time.time()))
            throttle.release(answer)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return intervals


def test_eight_threads_never_hold_more_than_four_requests_on_a_mailbox(redis_url, prefix, mailbox):
    intervals = hammer(redis_url, prefix, mailbox, threads=8, seconds=1.0)

    assert len(intervals) > 100
    assert most_at_once(intervals) == 4


def test_three_processes_never_hold_more_than_four_requests_on_a_mailbox(
    redis_url, prefix, mailbox
):
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        per_process = pool.starmap(hammer, [(redis_url, prefix, mailbox, 3, 2.0)] * 3)

    assert all(len(intervals) > 20 for intervals in per_process)
    assert most_at_once([interval for intervals in per_process for interval in intervals]) == 4


def test_window_admits_exactly_the_limit_and_waits_until_the_oldest_grant_leaves(
    throttle, client, mailbox
):
    budget = Budget(max_in_flight=None, limit=5, window=2, margin=0)
    first = throttle.acquire({mailbox: budget})
    time.sleep(0.3)
    later = [throttle.acquire({mailbox: budget}) for _ in range(4)]
    assert all(isinstance(grant, Grant) for grant in [first, *later])

    before = server_time(client)
    refused = throttle.acquire({mailbox: budget})
    after = server_time(client)

    assert isinstance(refused, Wait)
    assert refused.reason == "window"
    assert first.granted_at + 2 - after <= refused.seconds <= first.granted_at + 2 - before
    assert client.zcard(throttle.key(mailbox, "log")) == 5  # a refusal records nothing

    time.sleep(refused.seconds)
    assert isinstance(throttle.acquire({mailbox: budget}), Grant)
    before = server_time(client)
    next_wait = throttle.acquire({mailbox: budget})
    after = server_time(client)
    # Only the first grant has left: the next unit frees when the second does, ~0.3 s later.
    assert isinstance(next_wait, Wait)
    assert later[0].granted_at + 2 - after <= next_wait.seconds <= later[0].granted_at + 2 - before
    assert 0 < next_wait.seconds < 0.4


def test_window_counts_resource_units_and_adds_the_safety_margin(throttle, mailbox):
    budget = Budget(max_in_flight=None, limit=10, window=2, margin=0.5)

    assert isinstance(throttle.acquire({mailbox: budget}, cost=4), Grant)
    assert isinstance(throttle.acquire({mailbox: budget}, cost=4), Grant)
    refused = throttle.acquire({mailbox: budget}, cost=4)
    assert isinstance(refused, Wait)
    assert 2.0 < refused.seconds <= 2.5  # window + margin, less the moments since
    assert isinstance(throttle.acquire({mailbox: budget}, cost=2), Grant)
    with pytest.raises(ValueError):
        throttle.acquire({mailbox: budget}, cost=11)


def test_parallel_grants_never_exceed_the_limit_in_any_window_and_pace_tightly(throttle, mailbox):
    budget = Budget(max_in_flight=None, limit=5, window=1, margin=0)
    granted: list[float] = []
    started = time.monotonic()

    def work() -> None:
        for _ in range(4):
            with throttle.slot({mailbox: budget}, max_sleep=10) as grant:
                granted.append(grant.granted_at)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started

    granted.sort()
    assert len(granted) == 16
    assert min(granted[i + 5] - granted[i] for i in range(len(granted) - 5)) >= 1.0
    # Sixteen requests at five per second cannot finish before 3 s; exact waits keep them near it.
    assert granted[-1] - granted[0] >= 3.0
    assert elapsed <= 3.0 * 1.1


def test_cooldown_makes_other_workers_wait_and_keeps_the_later_end(throttle, other_worker, mailbox):
    elsewhere = Scope.mailbox(APP, "someone-else")
    throttle.cool_down(mailbox, 1.5)

    # Generous lower bounds: a loaded machine may stall a few hundred ms between the calls.
    refused = other_worker.acquire({mailbox: OUTLOOK_LIKE})
    assert isinstance(refused, Wait)
    assert refused.reason == "cooldown"
    assert 0.8 < refused.seconds <= 1.5
    assert 0.8 < other_worker.cool_down(mailbox, 0.1) <= 1.5  # a shorter one does not cut it
    assert isinstance(other_worker.acquire({elsewhere: OUTLOOK_LIKE}), Grant)

    time.sleep(other_worker.acquire({mailbox: OUTLOOK_LIKE}).seconds)
    assert isinstance(other_worker.acquire({mailbox: OUTLOOK_LIKE}), Grant)


def test_a_throttled_response_cools_down_every_scope_of_the_request(throttle, mailbox):
    app = Scope.app(f"app-{uuid.uuid4().hex[:8]}")

    assert throttle.throttled([mailbox, app], retry_after="0.5", attempt=1) == pytest.approx(0.5)
    for scope in (mailbox, app):
        refused = throttle.acquire({scope: Budget.app()})
        assert isinstance(refused, Wait)
        assert refused.reason == "cooldown"
        assert throttle.stats(scope)["throttled"] == 1
    assert 0 <= throttle.throttled([mailbox], retry_after=None, attempt=3) <= 2.0


@pytest.mark.parametrize("header", ["31536000", "Fri, 01 Jan 2100 00:00:00 GMT"])
def test_a_retry_after_beyond_the_cap_cools_down_for_the_cap_only(
    throttle, client, mailbox, header
):
    assert throttle.throttled([mailbox], retry_after=header, attempt=1) == MAX_COOLDOWN_SECONDS
    assert 0 < client.pttl(throttle.key(mailbox, "cooldown")) <= MAX_COOLDOWN_SECONDS * 1000
    refused = throttle.acquire({mailbox: OUTLOOK_LIKE})
    assert isinstance(refused, Wait) and refused.seconds <= MAX_COOLDOWN_SECONDS


def test_a_cooldown_stored_beyond_the_cap_is_cut_to_it_by_the_next_one(throttle, client, mailbox):
    a_year_on = int((server_time(client) + 365 * 86_400) * 1_000_000)
    client.set(throttle.key(mailbox, "cooldown"), a_year_on)

    assert throttle.cool_down(mailbox, 1) == MAX_COOLDOWN_SECONDS
    assert int(client.get(throttle.key(mailbox, "cooldown"))) < a_year_on


def test_a_killed_holders_lease_expires(throttle, other_worker, mailbox):
    budget = Budget(max_in_flight=1, limit=100, window=60)
    assert isinstance(throttle.acquire({mailbox: budget}, lease_seconds=0.3), Grant)
    # ...and the holder dies without releasing.

    slow_poller = Throttle(other_worker.redis, key_prefix=other_worker.key_prefix, poll_interval=5)
    refused = slow_poller.acquire({mailbox: budget})
    assert isinstance(refused, Wait)
    assert refused.reason == "concurrency"
    assert 0 < refused.seconds <= 0.3  # the lease ends before the next poll would

    time.sleep(refused.seconds)
    assert isinstance(slow_poller.acquire({mailbox: budget}), Grant)


def test_multi_scope_acquire_takes_all_or_nothing(throttle, client, mailbox):
    directory = Scope.tenant_directory(APP, f"tenant-{uuid.uuid4().hex[:8]}")
    directory_budget = Budget(max_in_flight=None, limit=4, window=60)
    assert isinstance(throttle.acquire({directory: directory_budget}, cost=3), Grant)

    refused = throttle.acquire(
        {mailbox: OUTLOOK_LIKE, directory: directory_budget}, cost={mailbox: 1, directory: 2}
    )

    assert isinstance(refused, Wait)
    assert refused.scope == directory
    for part in ("inflight", "log", "used"):
        assert not client.exists(throttle.key(mailbox, part))
    grants = [throttle.acquire({mailbox: OUTLOOK_LIKE}) for _ in range(4)]
    assert all(isinstance(grant, Grant) for grant in grants)

    for grant in grants:
        throttle.release(grant)
    both = throttle.acquire(
        {mailbox: OUTLOOK_LIKE, directory: directory_budget}, cost={mailbox: 1, directory: 1}
    )
    assert isinstance(both, Grant)
    assert client.zscore(throttle.key(mailbox, "inflight"), both.lease_id)
    assert client.get(throttle.key(directory, "used")) == b"4"


def test_release_frees_the_slot_but_not_the_units(throttle, client, mailbox):
    budget = Budget(max_in_flight=1, limit=2, window=60)
    grant = throttle.acquire({mailbox: budget})
    assert isinstance(throttle.acquire({mailbox: budget}), Wait)

    throttle.release(grant)

    assert isinstance(throttle.acquire({mailbox: budget}), Grant)
    assert client.get(throttle.key(mailbox, "used")) == b"2"


def test_every_key_expires_by_itself(prefix, client, mailbox):
    throttle = Throttle(client, key_prefix=prefix, stats_ttl=0.5)
    budget = Budget(max_in_flight=2, limit=1, window=0.3, margin=0)
    throttle.acquire({mailbox: budget}, lease_seconds=0.3)
    throttle.acquire({mailbox: budget})
    throttle.cool_down(mailbox, 0.2)

    keys = client.keys(f"{prefix}*")
    assert len(keys) == 5
    assert all(0 < client.pttl(key) <= 500 for key in keys)
    time.sleep(0.6)
    assert client.keys(f"{prefix}*") == []


def test_slot_sleeps_through_a_short_wait_and_records_it(throttle, client, mailbox):
    budget = Budget(max_in_flight=None, limit=1, window=0.3, margin=0)
    with throttle.slot({mailbox: budget}) as first:
        assert first.waited == 0

    with throttle.slot({mailbox: budget}) as second:
        assert 0.2 < second.waited < 1.0
        assert client.zcard(throttle.key(mailbox, "inflight")) == 0  # no concurrency limit

    assert second.granted_at - first.granted_at >= 0.3


def test_slot_raises_throttle_wait_instead_of_sleeping_long(throttle, mailbox):
    budget = Budget(max_in_flight=None, limit=1, window=10, margin=0)
    with throttle.slot({mailbox: budget}):
        pass

    started = time.monotonic()
    with pytest.raises(ThrottleWait) as raised, throttle.slot({mailbox: budget}, max_sleep=2):
        pytest.fail("the slot must not be granted")

    assert time.monotonic() - started < 0.5
    assert 9 < raised.value.seconds <= 10
    assert raised.value.reason == "window"
    assert raised.value.scope == mailbox


def test_slot_releases_when_the_request_fails(throttle, mailbox):
    budget = Budget(max_in_flight=1, limit=100, window=60)
    with pytest.raises(ConnectionError), throttle.slot({mailbox: budget}):
        raise ConnectionError("graph.microsoft.com went away")

    assert isinstance(throttle.acquire({mailbox: budget}), Grant)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("10", 10.0),
        ("2.128", 2.128),
        (" 0 ", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wednesday, 21-Oct-15 07:28:30 GMT", 30.0),
        ("Wed Oct 21 07:28:30 2015", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1e3", None),
        ("Wed, 32 Oct 2015 07:28:30 GMT", None),
    ],
)
def test_retry_after_accepts_seconds_fractions_and_http_dates(header, seconds):
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert retry_after_seconds(header, now=now) == seconds


def test_backoff_is_full_jitter_under_an_exponential_ceiling():
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (4, 4.0), (8, 60.0), (5000, 60.0)]:
        delays = [full_jitter(attempt, rng=rng) for _ in range(200)]
        assert all(0 <= delay <= ceiling for delay in delays)
        assert max(delays) > 0.8 * ceiling
        assert min(delays) < 0.2 * ceiling
    with pytest.raises(ValueError):
        full_jitter(0)


def test_budgets_follow_the_graph_limits():
    assert Budget.outlook_mailbox() == Budget(max_in_flight=4, limit=10_000, window=600)
    assert [Budget.directory(users).limit for users in (10, 50, 500, 501)] == [
        3_500,
        5_000,
        5_000,
        8_000,
    ]
    assert Budget.onedrive(6_000).limit == 6_000
    assert Budget.onedrive().window == 60
    assert directory_cost(2) == 2
    assert directory_cost(5, select=True, top=10) == 3
    assert directory_cost(1, select=True) == 1
    assert str(Scope.tenant_drive(APP, TENANT)) == f"tenant-drive:{APP}:{TENANT}"
    with pytest.raises(ValueError):
        Budget(max_in_flight=0, limit=5, window=1)
