"""Throttle budgets for Microsoft Graph, kept in Redis and shared by every worker.

Graph throttles per app + mailbox (Outlook: 4 requests in flight, 10,000 per 10 minutes) and
per app + tenant (directory and OneDrive resource units). We spend those budgets before sending,
so most 429s never happen; when one does happen anyway, `cool_down` stops every worker on that
scope until `Retry-After` has passed. Long waits are never slept: `slot` raises `ThrottleWait` and
the Celery task re-enqueues itself with `self.retry(countdown=wait.seconds)`.

Written by hand because no maintained library throttles the way Graph does: we need several
scopes taken all-or-nothing, a concurrency limit whose slots are leases that expire (a killed
worker must not hold a mailbox's slot forever), a window that charges resource units rather than
requests, cooldowns shared across workers, exact wait times rather than "try again later", and
Redis server time so workers on different machines agree. redis-py's `Lock` and the
token-bucket libraries each cover one of these at most.

Scopes belong to an app registration's own row on one Graph host (`owner_key`), never to its
client id: a client id is public, and unique only within one Microsoft tenant, so another
Graphport tenant could register the same one on a host it runs and, answering with a long
`Retry-After`, cool down everyone else's budget. For the same reason a cooldown never lasts longer
than MAX_COOLDOWN_SECONDS.

Each scope lives under `{prefix}{scope}:` in five keys, all with a PEXPIRE so idle scopes vanish:
  inflight  sorted set, lease id -> lease expiry (µs)       the concurrency slots
  log       sorted set, "lease id:cost" -> grant time (µs)  the sliding log of the window
  used      integer, the sum of the costs still in `log`    saves summing the log each time
  cooldown  integer, end of the cooldown (µs)               set after a 429, 503 or 504
  stats     hash: granted, delayed, throttled               for the admin and metrics

This module imports no Django, so it can be tested and benchmarked on its own.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import redis

from core import backoff, keys, metrics
from graphsync.budgets import Budget

#: The statuses after which Graph wants us to slow down; 504 comes along with 503 under load.
RETRYABLE_STATUSES = frozenset({429, 503, 504})

#: The longest a 429, 503 or 504 cools a scope down, whatever its `Retry-After` says. Microsoft's
#: waits are seconds to minutes (docs/microsoft.md, "Throttling limits and budgets"); a longer
#: one is a mistake or a hostile host's, and would stop every worker on the scope for as long.
#: Past the cap the next request simply asks again, and a real throttle answers with a new wait.
MAX_COOLDOWN_SECONDS = 600.0

_MICRO = 1_000_000


def owner_key(app_id: int, graph_host: str) -> str:
    """Whose budgets a scope counts: one app registration (its database row, which no other
    tenant can share) on one Graph host, e.g. `17@graph.microsoft.com`."""
    return f"{app_id}@{graph_host.lower()}"


@dataclass(frozen=True)
class Scope:
    """What Graph counts against: an app in one mailbox, or an app in one tenant's service.
    `owner` is an `owner_key`; `subject` the mailbox or the Microsoft tenant, or "all"."""

    kind: str
    owner: str
    subject: str

    @classmethod
    def app(cls, owner: str) -> Scope:
        return cls("app", owner, "all")

    @classmethod
    def mailbox(cls, owner: str, user_id: str) -> Scope:
        return cls("mailbox", owner, user_id)

    @classmethod
    def tenant_directory(cls, owner: str, tenant_id: str) -> Scope:
        return cls("tenant-directory", owner, tenant_id)

    @classmethod
    def tenant_drive(cls, owner: str, tenant_id: str) -> Scope:
        return cls("tenant-drive", owner, tenant_id)

    def __str__(self) -> str:
        return f"{self.kind}:{self.owner}:{self.subject}"


@dataclass(frozen=True)
class Grant:
    """Permission to send one request. `granted_at` is Redis server time, in seconds."""

    lease_id: str
    scopes: tuple[Scope, ...]
    granted_at: float
    waited: float = 0.0  # seconds `slot` slept before this grant; the sync run adds them up


@dataclass(frozen=True)
class Wait:
    """Nothing was recorded; `scope` refuses for `seconds` more, because of `reason`
    ("cooldown", "concurrency" or "window")."""

    seconds: float
    scope: Scope
    reason: str


class ThrottleWait(Exception):
    """Transient: the budget refuses for longer than a worker should sleep. Re-enqueue the task
    with `countdown=seconds`; `slept` is what was already spent sleeping before giving up."""

    def __init__(self, seconds: float, scope: Scope, reason: str, slept: float = 0.0):
        super().__init__(f"{scope} is throttled ({reason}) for {seconds:.3f} s")
        self.seconds = seconds
        self.scope = scope
        self.reason = reason
        self.slept = slept


# One round trip decides for every scope of the request, so two workers can never both take the
# last unit. Lua turns numbers into strings with 14 significant digits, which would round
# microsecond timestamps: every number handed back to Redis goes through `int`.
_ACQUIRE = """
local function int(n) return string.format('%d', n) end
local function cost_of(member) return tonumber(string.match(member, ':(%d+)$')) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lease_id, lease_until = ARGV[1], now + tonumber(ARGV[2])
local poll, stats_ttl = tonumber(ARGV[3]), ARGV[4]
local scopes = #KEYS / 5
local longest, blocker, why = 0, 0, ''
for i = 0, scopes - 1 do
  local inflight, log, used, cooldown, stats = KEYS[i*5+1], KEYS[i*5+2], KEYS[i*5+3],
    KEYS[i*5+4], KEYS[i*5+5]
  local max_in_flight, limit = tonumber(ARGV[5+i*4]), tonumber(ARGV[6+i*4])
  local span, cost = tonumber(ARGV[7+i*4]), tonumber(ARGV[8+i*4])
  redis.call('ZREMRANGEBYSCORE', inflight, '-inf', int(now))
  local gone = redis.call('ZRANGEBYSCORE', log, '-inf', int(now - span))
  if #gone > 0 then
    local freed = 0
    for _, member in ipairs(gone) do freed = freed + cost_of(member) end
    redis.call('ZREMRANGEBYSCORE', log, '-inf', int(now - span))
    redis.call('DECRBY', used, freed)
  end
  if redis.call('EXISTS', log) == 0 then redis.call('DEL', used) end
  local waits = {}
  local cooled = tonumber(redis.call('GET', cooldown) or '0')
  if cooled > now then waits.cooldown = cooled - now end
  if max_in_flight > 0 and redis.call('ZCARD', inflight) >= max_in_flight then
    -- A slot usually frees on release, long before its lease ends: poll, capped by the lease.
    local first = redis.call('ZRANGE', inflight, 0, 0, 'WITHSCORES')
    waits.concurrency = math.min(tonumber(first[2]) - now, poll)
  end
  local excess = tonumber(redis.call('GET', used) or '0') + cost - limit
  if excess > 0 then
    -- Walk the log from its oldest grant until enough units would have left the window.
    local freed, index, at = 0, 0, now
    while freed < excess do
      local page = redis.call('ZRANGE', log, index, index + 99, 'WITHSCORES')
      if #page == 0 then break end
      for j = 1, #page, 2 do
        freed, at = freed + cost_of(page[j]), tonumber(page[j+1])
        if freed >= excess then break end
      end
      index = index + 100
    end
    waits.window = at + span - now
  end
  for reason, w in pairs(waits) do
    if w > longest then longest, blocker, why = w, i, reason end
  end
  if next(waits) ~= nil then
    redis.call('HINCRBY', stats, 'delayed', 1)
    redis.call('PEXPIRE', stats, stats_ttl)
  end
end
if longest > 0 then return {0, longest, blocker, why} end
for i = 0, scopes - 1 do
  local inflight, log, used, stats = KEYS[i*5+1], KEYS[i*5+2], KEYS[i*5+3], KEYS[i*5+5]
  local span_ms = int(math.ceil(tonumber(ARGV[7+i*4]) / 1000))
  local cost = tonumber(ARGV[8+i*4])
  if tonumber(ARGV[5+i*4]) > 0 then
    redis.call('ZADD', inflight, int(lease_until), lease_id)
    local last = redis.call('ZRANGE', inflight, -1, -1, 'WITHSCORES')
    redis.call('PEXPIRE', inflight, int(math.ceil((tonumber(last[2]) - now) / 1000)))
  end
  redis.call('ZADD', log, int(now), lease_id .. ':' .. int(cost))
  redis.call('INCRBY', used, int(cost))
  redis.call('PEXPIRE', log, span_ms)
  redis.call('PEXPIRE', used, span_ms)
  redis.call('HINCRBY', stats, 'granted', 1)
  redis.call('PEXPIRE', stats, stats_ttl)
end
return {1, now}
"""

# Keeps the later of the current and the new cooldown: a short Retry-After seen by one worker
# must not cut short a long one seen by another. Neither ends later than the cap (ARGV[3]) from
# now, so a cooldown stored before the cap existed heals at the next throttled answer.
_COOL_DOWN = """
local function int(n) return string.format('%d', n) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ends = math.max(now + tonumber(ARGV[1]), tonumber(redis.call('GET', KEYS[1]) or '0'))
ends = math.min(ends, now + tonumber(ARGV[3]))
redis.call('SET', KEYS[1], int(ends), 'PX', int(math.max(1, math.ceil((ends - now) / 1000))))
redis.call('HINCRBY', KEYS[2], 'throttled', 1)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return ends - now
"""

_KEY_PARTS = ("inflight", "log", "used", "cooldown", "stats")


class Throttle:
    def __init__(
        self,
        redis_client: redis.Redis,
        key_prefix: str = keys.THROTTLE_PREFIX,
        *,
        poll_interval: float = 0.05,
        stats_ttl: float = 86_400,
    ):
        self.redis = redis_client
        self.key_prefix = key_prefix
        self.poll_interval = poll_interval
        self.stats_ttl = stats_ttl
        self._acquire = redis_client.register_script(_ACQUIRE)
        self._cool_down = redis_client.register_script(_COOL_DOWN)

    def key(self, scope: Scope, part: str) -> str:
        return f"{self.key_prefix}{scope}:{part}"

    def acquire(
        self,
        budgets: Mapping[Scope, Budget],
        cost: int | Mapping[Scope, int] = 1,
        lease_seconds: float = 60,
    ) -> Grant | Wait:
        """Take `cost` units and a concurrency slot in every scope, or nothing at all.

        `cost` may differ per scope: a directory read costs 2 resource units in the tenant's
        directory scope but one request in the app-wide scope.

        `lease_seconds` should outlast the request's HTTP timeout: past it the slot is presumed
        abandoned by a dead worker and given to someone else.
        """
        if not budgets:
            raise ValueError("acquire needs at least one scope")
        scopes = tuple(budgets)
        costs = {scope: cost if isinstance(cost, int) else cost[scope] for scope in scopes}
        for scope, budget in budgets.items():
            if not 1 <= costs[scope] <= budget.limit:
                raise ValueError(f"cost {costs[scope]} can never fit {scope}'s {budget.limit}")
        keys = [self.key(scope, part) for scope in scopes for part in _KEY_PARTS]
        args: list[int | str] = [
            uuid.uuid4().hex,
            _micros(lease_seconds),
            _micros(self.poll_interval),
            math.ceil(self.stats_ttl * 1000),
        ]
        for scope, budget in budgets.items():
            args += [
                budget.max_in_flight or 0,
                budget.limit,
                _micros(budget.window + budget.margin),
                costs[scope],
            ]
        answer = self._acquire(keys=keys, args=args)
        if answer[0] == 1:
            return Grant(lease_id=str(args[0]), scopes=scopes, granted_at=answer[1] / _MICRO)
        return Wait(seconds=answer[1] / _MICRO, scope=scopes[answer[2]], reason=_text(answer[3]))

    def release(self, grant: Grant) -> None:
        """Free the concurrency slots. The window units stay spent: Microsoft counts every
        request it received, whatever its outcome."""
        with self.redis.pipeline(transaction=False) as pipe:
            for scope in grant.scopes:
                pipe.zrem(self.key(scope, "inflight"), grant.lease_id)
            pipe.execute()

    def cool_down(self, scope: Scope, seconds: float) -> float:
        """Stop every worker from starting a request on `scope` for `seconds` (at most
        MAX_COOLDOWN_SECONDS), unless a later cooldown is already set. Returns the seconds the
        scope is now cooling down."""
        keys = [self.key(scope, "cooldown"), self.key(scope, "stats")]
        args = [
            _micros(min(max(seconds, 0.0), MAX_COOLDOWN_SECONDS)),
            math.ceil(self.stats_ttl * 1000),
            _micros(MAX_COOLDOWN_SECONDS),
        ]
        return self._cool_down(keys=keys, args=args) / _MICRO

    def throttled(self, scopes: Iterable[Scope], retry_after: str | None, attempt: int) -> float:
        """Record a 429, 503 or 504: cool every scope of the request down for `Retry-After`, or
        for an exponential backoff with full jitter when the header is missing or unreadable.
        Returns how long the scopes now cool down (an earlier, longer cooldown may win, up to
        MAX_COOLDOWN_SECONDS); the caller retries after that, or raises `ThrottleWait` when it
        is long."""
        delay = retry_after_seconds(retry_after)
        if delay is None:
            delay = backoff.full_jitter(attempt)
        return max(self.cool_down(scope, delay) for scope in scopes)

    def stats(self, scope: Scope) -> dict[str, int]:
        counts = self.redis.hgetall(self.key(scope, "stats"))
        return {_text(name): int(value) for name, value in counts.items()}

    @contextmanager
    def slot(
        self,
        budgets: Mapping[Scope, Budget],
        cost: int | Mapping[Scope, int] = 1,
        lease_seconds: float = 60,
        max_sleep: float = 2.0,
    ) -> Iterator[Grant]:
        """Hold a grant for the duration of one request, and release it whatever happens.

        Sleeps through short waits, at most `max_sleep` seconds in all; a longer wait raises
        `ThrottleWait` so the worker goes back to the pool instead of sleeping.
        """
        slept = 0.0
        while True:
            answer = self.acquire(budgets, cost=cost, lease_seconds=lease_seconds)
            if isinstance(answer, Grant):
                break
            if slept + answer.seconds > max_sleep:
                raise ThrottleWait(answer.seconds, answer.scope, answer.reason, slept)
            started = time.monotonic()
            time.sleep(answer.seconds)
            waited = time.monotonic() - started
            slept += waited
            metrics.GRAPH_WAIT.labels(scope=answer.scope.kind, reason=answer.reason).inc(waited)
        try:
            yield replace(answer, waited=slept)
        finally:
            self.release(answer)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delay-seconds, the fractional seconds Graph
    also sends (`2.128`), or any HTTP-date form of RFC 9110. None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # the asctime form has no zone; HTTP dates are always GMT
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def _micros(seconds: float) -> int:
    return math.ceil(seconds * _MICRO)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
