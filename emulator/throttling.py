"""Graph throttling as Microsoft does it, plus injected faults, with readable counters.

Outlook: per app + mailbox at most `max_in_flight` concurrent requests and a request budget per
window. Directory: per app + tenant a resource-unit budget per 10 s sized by the tenant's user
count. Throttled requests count against the budget too, so a client hammering through 429s stays
throttled, as at Microsoft.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from emulator.errors import GraphError

if TYPE_CHECKING:
    from emulator.world import World

DIRECTORY_WINDOW = 10.0


@dataclass
class MailboxPolicy:
    budget: int = 10_000
    window_seconds: float = 600
    max_in_flight: int = 4
    rate_429: float = 0.0
    rate_503: float = 0.0
    rate_504: float = 0.0
    retry_after: str = "seconds"  # seconds | date | none
    retry_after_seconds: float = 1.0
    latency_ms: float = 0.0


@dataclass
class MailboxCounters:
    requests: int = 0
    throttled_429: int = 0
    budget_429: int = 0
    concurrency_429: int = 0
    injected_429: int = 0
    injected_503: int = 0
    injected_504: int = 0
    peak_concurrency: int = 0
    in_flight: int = 0
    window_start: float = 0.0
    window_count: int = 0


@dataclass
class TenantCounters:
    requests: int = 0
    resource_units: int = 0
    throttled_429: int = 0
    window_start: float = 0.0
    window_units: int = 0
    limit: int | None = None  # None: by tenant size, as Microsoft


@dataclass
class Lease:
    counters: MailboxCounters | None
    headers: dict[str, str] = field(default_factory=dict)
    latency_ms: float = 0.0

    def release(self) -> None:
        if self.counters is not None:
            self.counters.in_flight -= 1
            self.counters = None


def retry_after(style: str, seconds: float) -> dict[str, str]:
    if style == "none":
        return {}
    if style == "date":
        return {"Retry-After": email.utils.formatdate(time.time() + seconds, usegmt=True)}
    text = str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
    return {"Retry-After": text}


def too_many(code: str, message: str, headers: dict[str, str]) -> GraphError:
    return GraphError(429, code, message, headers, {"code": "429", "status": "429"})


class Throttle:
    def __init__(self, world: World, seed: int | None = None) -> None:
        self.world = world
        self.random = random.Random(seed)
        self.policies: dict[tuple[str, str], MailboxPolicy] = {}
        self.mailboxes: dict[tuple[str, str], MailboxCounters] = {}
        self.tenants: dict[tuple[str, str], TenantCounters] = {}

    def policy(self, client_id: str, mailbox: str) -> MailboxPolicy:
        for key in ((client_id, mailbox), (client_id, "*"), ("*", mailbox), ("*", "*")):
            found = self.policies.get(key)
            if found is not None:
                return found
        return MailboxPolicy()

    def set_policy(self, client_id: str, mailbox: str, values: dict[str, Any]) -> MailboxPolicy:
        current = asdict(self.policy(client_id, mailbox))
        unknown = set(values) - set(current)
        if unknown:
            raise ValueError(f"unknown throttling fields: {sorted(unknown)}")
        if values.get("retry_after", "seconds") not in ("seconds", "date", "none"):
            raise ValueError("retry_after must be seconds, date or none")
        policy = MailboxPolicy(**{**current, **values})
        self.policies[(client_id, mailbox)] = policy
        return policy

    def enter(self, client_id: str, mailbox: str | None) -> Lease:
        """Admit one request (raises the 429/503/504 GraphError when it is refused)."""
        policy = self.policy(client_id, mailbox or "*")
        if mailbox is None:
            self._inject(policy, None)
            return Lease(None, latency_ms=policy.latency_ms)
        counters = self.mailboxes.setdefault((client_id, mailbox), MailboxCounters())
        now = time.monotonic()
        if now - counters.window_start >= policy.window_seconds:
            counters.window_start, counters.window_count = now, 0
        counters.requests += 1
        counters.window_count += 1
        if counters.in_flight >= policy.max_in_flight:
            counters.throttled_429 += 1
            counters.concurrency_429 += 1
            raise too_many(
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                retry_after(policy.retry_after, policy.retry_after_seconds),
            )
        if counters.window_count > policy.budget:
            counters.throttled_429 += 1
            counters.budget_429 += 1
            wait = max(1, math.ceil(counters.window_start + policy.window_seconds - now))
            raise too_many(
                "TooManyRequests",
                "Please retry again later.",
                retry_after(policy.retry_after, wait),
            )
        self._inject(policy, counters)
        counters.in_flight += 1
        counters.peak_concurrency = max(counters.peak_concurrency, counters.in_flight)
        return Lease(counters, latency_ms=policy.latency_ms)

    def _inject(self, policy: MailboxPolicy, counters: MailboxCounters | None) -> None:
        roll = self.random.random()
        headers = retry_after(policy.retry_after, policy.retry_after_seconds)
        if roll < policy.rate_429:
            if counters:
                counters.throttled_429 += 1
                counters.injected_429 += 1
            raise too_many("TooManyRequests", "Please retry again later.", headers)
        roll -= policy.rate_429
        if roll < policy.rate_503:
            if counters:
                counters.injected_503 += 1
            raise GraphError(
                503,
                "serviceNotAvailable",
                "The service is temporarily unavailable. Please retry later.",
                headers,
            )
        roll -= policy.rate_503
        if roll < policy.rate_504:
            if counters:
                counters.injected_504 += 1
            raise GraphError(
                504, "UnknownError", "The gateway did not receive a response in time.", headers
            )

    # directory resource units

    def tenant_limit(self, tenant_id: str, counters: TenantCounters) -> int:
        if counters.limit is not None:
            return counters.limit
        tenant = self.world.directory.tenants.get(tenant_id)
        users = len(tenant.users) if tenant else 0
        return 3500 if users < 50 else 5000 if users <= 500 else 8000

    def set_tenant_limit(self, client_id: str, tenant_id: str, limit: int | None) -> None:
        self.tenants.setdefault((client_id, tenant_id), TenantCounters()).limit = limit

    def charge_directory(
        self, client_id: str, tenant_id: str, cost: int, style: str = "seconds"
    ) -> dict[str, str]:
        counters = self.tenants.setdefault((client_id, tenant_id), TenantCounters())
        now = time.monotonic()
        if now - counters.window_start >= DIRECTORY_WINDOW:
            counters.window_start, counters.window_units = now, 0
        counters.requests += 1
        counters.resource_units += cost
        counters.window_units += cost
        limit = self.tenant_limit(tenant_id, counters)
        headers = {"x-ms-resource-unit": str(cost)}
        share = counters.window_units / limit
        if share > 0.8:
            headers["x-ms-throttle-limit-percentage"] = f"{min(share, 1.8):.1f}"
        if counters.window_units > limit:
            counters.throttled_429 += 1
            wait = max(1, math.ceil(counters.window_start + DIRECTORY_WINDOW - now))
            headers.update(retry_after(style, wait))
            headers["x-ms-throttle-scope"] = f"Tenant_Application/ReadWrite/{tenant_id}/{client_id}"
            headers["x-ms-throttle-information"] = "ResourceUnitLimitExceeded"
            raise too_many("TooManyRequests", "Too many requests.", headers)
        return headers

    # reading and resetting

    def counters(self) -> dict[str, Any]:
        return {
            "mailboxes": {f"{c}:{m}": asdict(v) for (c, m), v in self.mailboxes.items()},
            "tenants": {f"{c}:{t}": asdict(v) for (c, t), v in self.tenants.items()},
        }

    def reset(self) -> None:
        for counters in self.mailboxes.values():
            in_flight = counters.in_flight
            counters.__init__()  # type: ignore[misc]
            counters.in_flight = in_flight
        for key, tenant in list(self.tenants.items()):
            self.tenants[key] = TenantCounters(limit=tenant.limit)
