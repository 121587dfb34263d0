"""Microsoft's Graph throttling limits (docs/microsoft.md, "Throttling limits and budgets"),
the emulator's defaults: one policy class per scope, and the tiers that size a budget by tenant.
"""

from __future__ import annotations

from dataclasses import dataclass

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
class AppPolicy:
    budget: int = 130_000
    window_seconds: float = 10


@dataclass
class DirectoryPolicy:
    ru_budget: int | None = None  # None: by tenant size, as Microsoft
    window_seconds: float = DIRECTORY_WINDOW


@dataclass
class DrivePolicy:
    ru_budget: int | None = None  # None: by licence count, as Microsoft
    window_seconds: float = 60


@dataclass
class SubscriptionPolicy:
    app_budget: int = 2_000
    tenant_budget: int = 500
    window_seconds: float = 20


# scope -> (policy class, the body field naming the second key, or None for per-app limits)
SCOPES: dict[str, tuple[type, str | None]] = {
    "app": (AppPolicy, None),
    "mailbox": (MailboxPolicy, "mailbox"),
    "directory": (DirectoryPolicy, "tenant"),
    "drive": (DrivePolicy, "tenant"),
    "subscriptions": (SubscriptionPolicy, None),
}


def directory_limit(users: int) -> int:
    """Identity resource units per 10 s by tenant size (under 50, up to 500, more)."""
    return 3500 if users < 50 else 5000 if users <= 500 else 8000


def drive_limit(licences: int) -> int:
    """SharePoint/OneDrive resource units per minute per app + tenant, by licence count."""
    for ceiling, limit in ((1_000, 1200), (5_000, 2400), (15_000, 3600), (50_000, 4800)):
        if licences <= ceiling:
            return limit
    return 6000
