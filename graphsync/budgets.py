"""What Graphport may spend against Microsoft Graph: budgets per throttling scope, Microsoft's
published limits as their defaults, and what one request costs (docs/microsoft.md, "Throttling
limits and budgets"). graphsync.throttle enforces them in Redis."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Budget:
    """The limits of one scope: `limit` units per `window` seconds, `max_in_flight` at once.

    `margin` seconds are added to the window we count in: a request reaches Microsoft some
    milliseconds after we grant it, and uneven latency could otherwise squeeze `limit + 1`
    requests into one of *their* windows.
    """

    max_in_flight: int | None
    limit: int
    window: float
    margin: float = 0.25

    def __post_init__(self) -> None:
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1, or None for no limit")
        if self.limit < 1 or self.window <= 0 or self.margin < 0:
            raise ValueError("a budget needs limit >= 1, window > 0 and margin >= 0")

    @classmethod
    def app(cls) -> Budget:
        """Every request of one app, across all tenants and services."""
        return cls(max_in_flight=None, limit=130_000, window=10)

    @classmethod
    def outlook_mailbox(cls) -> Budget:
        return cls(max_in_flight=4, limit=10_000, window=600)

    @classmethod
    def directory(cls, tenant_users: int) -> Budget:
        """Identity resource units per 10 s, by the size of the customer's tenant."""
        if tenant_users < 50:
            units = 3_500
        elif tenant_users <= 500:
            units = 5_000
        else:
            units = 8_000
        return cls(max_in_flight=None, limit=units, window=10)

    @classmethod
    def onedrive(cls, units_per_minute: int = 1_200) -> Budget:
        """SharePoint/OneDrive resource units per minute: 1,200 to 6,000 by licence count.

        Microsoft does not publish the exact steps, so the default is the floor; raise it for a
        tenant once its licence count is known.
        """
        return cls(max_in_flight=None, limit=units_per_minute, window=60)


# Microsoft's published limits (docs/microsoft.md, "Throttling limits and budgets"): the budgets
# Graphport spends against, unless GRAPH_BUDGETS_JSON narrows one (tests and benchmarks, to bind
# against an emulator's tighter limits). The directory and OneDrive budgets take the smallest
# tier, which holds whatever the customer's size.
LIMITS: dict[str, Budget] = {
    "app": Budget.app(),
    "mailbox": Budget.outlook_mailbox(),
    "directory": Budget.directory(tenant_users=0),
    "drive": Budget.onedrive(),
    # Subscription writes (create, renew, delete): per app + tenant, and per app.
    "subscriptions": Budget(max_in_flight=None, limit=500, window=20),
    "subscriptions_app": Budget(max_in_flight=None, limit=2_000, window=20),
}


def configured(kind: str, overrides: Mapping[str, Mapping[str, Any]]) -> Budget:
    """The budget of `kind`: Microsoft's limit with the operator's overrides applied."""
    return replace(LIMITS[kind], **overrides.get(kind, {}))


def check_overrides(overrides: object) -> None:
    """Raise ValueError naming what is wrong with GRAPH_BUDGETS_JSON."""
    if not isinstance(overrides, dict):
        raise ValueError("is not a JSON object of budgets")
    fields = {"max_in_flight", "limit", "window", "margin"}
    for kind, override in overrides.items():
        if kind not in LIMITS:
            raise ValueError(f"unknown budget {kind!r} (known: {', '.join(LIMITS)})")
        if not isinstance(override, dict) or not set(override) <= fields:
            raise ValueError(f"budget {kind!r} takes an object with {', '.join(sorted(fields))}")
        configured(kind, overrides)  # Budget checks the values themselves


def directory_cost(base: int, *, select: bool = False, top: int | None = None) -> int:
    """Resource units of one identity request: `base` is 2 for users, 3 for group members,
    5 for transitive members and 1 otherwise; `$select` and a `$top` under 20 each save one."""
    return max(1, base - int(select) - int(top is not None and top < 20))
