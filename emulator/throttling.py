"""Graph throttling as Microsoft does it, plus injected faults, with readable counters.

Every request first spends one of its app's requests across all tenants (130,000 / 10 s), then
the budget of its service:

- Outlook (mail, calendar, contacts): per app + mailbox, at most `max_in_flight` concurrent
  requests and a request budget per window (10,000 / 10 min, 4 at once);
- directory: per app + tenant, resource units per 10 s sized by the tenant's user count;
- OneDrive: per app + tenant, resource units per minute sized by its licence count;
- subscription writes: per app and per app + tenant (2,000 and 500 / 20 s).

Throttled requests count against the budget too, so a client hammering through 429s stays
throttled, as at Microsoft. Every limit can be set per app (and per mailbox or tenant), `*`
standing for any: `set_limit`, from a scenario's `throttling` or the control API.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from emulator.errors import GraphError
from emulator.limits import (
    SCOPES,
    AppPolicy,
    DirectoryPolicy,
    DrivePolicy,
    MailboxPolicy,
    SubscriptionPolicy,
    directory_limit,
    drive_limit,
)

if TYPE_CHECKING:
    from emulator.world import World


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
class UnitCounters:
    """Requests and what they cost (requests or resource units) in one budget's window."""

    requests: int = 0
    resource_units: int = 0
    throttled_429: int = 0
    window_start: float = 0.0
    window_units: int = 0
    limit: int = 0  # the budget last applied

    def spend(self, cost: int, limit: int, seconds: float, now: float) -> float | None:
        """Spend `cost`; the seconds until the window ends when that goes over `limit`."""
        if now - self.window_start >= seconds:
            self.window_start, self.window_units = now, 0
        self.requests += 1
        self.resource_units += cost
        self.window_units += cost
        self.limit = limit
        if self.window_units <= limit:
            return None
        self.throttled_429 += 1
        return max(1, math.ceil(self.window_start + seconds - now))

    def resets_in(self, seconds: float, now: float) -> int:
        return max(0, math.ceil(self.window_start + seconds - now))


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


def seconds(wait: float) -> dict[str, str]:
    return retry_after("seconds", wait)


def too_many(code: str, message: str, headers: dict[str, str]) -> GraphError:
    return GraphError(429, code, message, headers, {"code": "429", "status": "429"})


class Throttle:
    def __init__(self, world: World, seed: int | None = None) -> None:
        self.world = world
        self.random = random.Random(seed)
        self.policies: dict[str, dict[tuple[str, str], Any]] = {scope: {} for scope in SCOPES}
        self.apps: dict[str, UnitCounters] = {}
        self.mailboxes: dict[tuple[str, str], MailboxCounters] = {}
        self.tenants: dict[tuple[str, str], UnitCounters] = {}
        self.drives: dict[tuple[str, str], UnitCounters] = {}
        self.subscription_apps: dict[str, UnitCounters] = {}
        self.subscription_tenants: dict[tuple[str, str], UnitCounters] = {}

    # policies

    def lookup(self, scope: str, client_id: str, target: str = "*") -> Any:
        table = self.policies[scope]
        for key in ((client_id, target), (client_id, "*"), ("*", target), ("*", "*")):
            found = table.get(key)
            if found is not None:
                return found
        return SCOPES[scope][0]()

    def policy(self, client_id: str, mailbox: str) -> MailboxPolicy:
        return self.lookup("mailbox", client_id, mailbox)

    def set_limit(self, scope: str, body: dict[str, Any]) -> dict[str, Any]:
        """Set one scope's limit from a control body: `client_id` (default `*`), `mailbox`
        (user id or UPN) or `tenant` (id or domain) where the scope has one, and the policy's
        fields; those not given keep what applies now."""
        scope = "directory" if scope == "tenant" else scope
        if scope not in SCOPES:
            raise ValueError(f"unknown throttling scope {scope!r}: one of {sorted(SCOPES)}")
        cls, target_field = SCOPES[scope]
        values = dict(body)
        client_id = str(values.pop("client_id", "*"))
        target = "*"
        if target_field is not None:
            target = self.resolve(target_field, str(values.pop(target_field, "*")))
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown {scope} throttling fields: {sorted(unknown)}")
        if values.get("retry_after", "seconds") not in ("seconds", "date", "none"):
            raise ValueError("retry_after must be seconds, date or none")
        policy = cls(**{**asdict(self.lookup(scope, client_id, target)), **values})
        self.policies[scope][(client_id, target)] = policy
        return asdict(policy)

    def configure(self, spec: dict[str, Any]) -> None:
        """A scenario's `throttling`: {scope: body or [bodies]}, bodies as for `set_limit`."""
        for scope, bodies in spec.items():
            for body in bodies if isinstance(bodies, list) else [bodies]:
                self.set_limit(scope, body)

    def resolve(self, kind: str, ref: str) -> str:
        if ref == "*":
            return ref
        directory = self.world.directory
        found = directory.find_user(ref) if kind == "mailbox" else directory.find_tenant(ref)
        if found is None:
            raise KeyError(f"unknown {'user' if kind == 'mailbox' else 'tenant'} {ref!r}")
        return found.id

    # the app across all tenants

    def charge_app(self, client_id: str) -> None:
        policy: AppPolicy = self.lookup("app", client_id)
        counters = self.apps.setdefault(client_id, UnitCounters())
        now = time.monotonic()
        wait = counters.spend(1, policy.budget, policy.window_seconds, now)
        if wait is not None:
            raise too_many(
                "TooManyRequests", "Please retry again later.", retry_after("seconds", wait)
            )

    # Outlook: app + mailbox

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

    # directory: app + tenant resource units

    def users_in(self, tenant_id: str) -> int:
        tenant = self.world.directory.tenants.get(tenant_id)
        return len(tenant.users) if tenant else 0

    def charge_directory(
        self, client_id: str, tenant_id: str, cost: int, style: str = "seconds"
    ) -> dict[str, str]:
        policy: DirectoryPolicy = self.lookup("directory", client_id, tenant_id)
        limit = policy.ru_budget
        if limit is None:
            limit = directory_limit(self.users_in(tenant_id))
        counters = self.tenants.setdefault((client_id, tenant_id), UnitCounters())
        wait = counters.spend(cost, limit, policy.window_seconds, time.monotonic())
        headers = {"x-ms-resource-unit": str(cost)}
        share = counters.window_units / limit
        if share > 0.8:
            headers["x-ms-throttle-limit-percentage"] = f"{min(share, 1.8):.1f}"
        if wait is not None:
            headers.update(retry_after(style, wait))
            headers["x-ms-throttle-scope"] = f"Tenant_Application/ReadWrite/{tenant_id}/{client_id}"
            headers["x-ms-throttle-information"] = "ResourceUnitLimitExceeded"
            raise too_many("TooManyRequests", "Too many requests.", headers)
        return headers

    # OneDrive: app + tenant resource units

    def charge_drive(self, client_id: str, tenant_id: str, cost: int) -> dict[str, str]:
        policy: DrivePolicy = self.lookup("drive", client_id, tenant_id)
        limit = policy.ru_budget
        if limit is None:
            limit = drive_limit(self.users_in(tenant_id))
        counters = self.drives.setdefault((client_id, tenant_id), UnitCounters())
        now = time.monotonic()
        wait = counters.spend(cost, limit, policy.window_seconds, now)
        headers: dict[str, str] = {}
        # SharePoint sends its RateLimit headers once the app has used 80% of its budget.
        if counters.window_units >= 0.8 * limit:
            headers = {
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": str(max(0, limit - counters.window_units)),
                "RateLimit-Reset": str(counters.resets_in(policy.window_seconds, now)),
            }
        if wait is not None:
            raise GraphError(
                429,
                "activityLimitReached",
                "The request has been throttled",
                {**headers, **seconds(wait)},
                {"code": "throttledRequest"},
            )
        return headers

    # subscription writes: app, and app + tenant

    def charge_subscription_write(self, client_id: str, tenant_id: str) -> None:
        policy: SubscriptionPolicy = self.lookup("subscriptions", client_id)
        now = time.monotonic()
        app = self.subscription_apps.setdefault(client_id, UnitCounters())
        tenant = self.subscription_tenants.setdefault((client_id, tenant_id), UnitCounters())
        waits = [
            app.spend(1, policy.app_budget, policy.window_seconds, now),
            tenant.spend(1, policy.tenant_budget, policy.window_seconds, now),
        ]
        wait = max((w for w in waits if w is not None), default=None)
        if wait is not None:
            raise too_many(
                "TooManyRequests", "Please retry again later.", retry_after("seconds", wait)
            )

    # reading and resetting

    def counters(self) -> dict[str, Any]:
        def pairs(table: dict[tuple[str, str], Any]) -> dict[str, Any]:
            return {f"{a}:{b}": asdict(v) for (a, b), v in table.items()}

        return {
            "apps": {c: asdict(v) for c, v in self.apps.items()},
            "mailboxes": pairs(self.mailboxes),
            "tenants": pairs(self.tenants),
            "drives": pairs(self.drives),
            "subscriptions": {
                "apps": {c: asdict(v) for c, v in self.subscription_apps.items()},
                "tenants": pairs(self.subscription_tenants),
            },
        }

    def reset(self) -> None:
        for counters in self.mailboxes.values():
            in_flight = counters.in_flight
            counters.__init__()  # type: ignore[misc]
            counters.in_flight = in_flight
        for table in (
            self.apps,
            self.tenants,
            self.drives,
            self.subscription_apps,
            self.subscription_tenants,
        ):
            table.clear()
