"""Every Redis key Graphport writes, named in one place.

All keys share one prefix, so an operator can tell Graphport's keys from others in a shared Redis
and tests can clear them by pattern. Each function says what the key holds and who owns it.
"""

from __future__ import annotations

PREFIX = "graphport:"

#: throttle budgets, leases and cooldowns (graphsync.throttle); the scope and part follow
THROTTLE_PREFIX = f"{PREFIX}throttle:"


def token_pending(connection_id: int) -> str:
    """A token answer received but perhaps not yet stored, with the tokens it replaces
    (encrypted; connections.tokens, which applies it only over those)."""
    return f"{PREFIX}token-pending:{connection_id}"


#: every kept token answer, for rotate_encryption_keys
TOKEN_PENDING_PATTERN = f"{PREFIX}token-pending:*"


def token_queued(connection_id: int) -> str:
    """Set while a refresh of the connection waits in the queue, so beat does not add another."""
    return f"{PREFIX}token-queued:{connection_id}"


def subscription_lock(job_id: int) -> str:
    """The lock held while a job's change-notification subscription is created or renewed."""
    return f"{PREFIX}subscription:{job_id}"


def notified(job_id: int) -> str:
    """Set while a notification-triggered run of the job is queued: a burst becomes one run."""
    return f"{PREFIX}notified:{job_id}"


def dispatch_soon() -> str:
    """Set for a moment when a run has asked for a dispatch (graphsync.dispatch.room_freed)."""
    return f"{PREFIX}dispatch-soon"


def dispatch_backlog() -> str:
    """Set while due sync jobs wait for room under their tenant's cap (graphsync.dispatch)."""
    return f"{PREFIX}dispatch-backlog"


def webhook_budget(address: str) -> str:
    """Requests to Graph's webhooks from one address in the current window (graphsync.webhooks):
    a count that lives as long as the window."""
    return f"{PREFIX}webhook-budget:{address}"


def webhook_junk(address: str) -> str:
    """Notifications from one address dropped in the current window (unknown subscription, wrong
    clientState: graphsync.webhooks)."""
    return f"{PREFIX}webhook-junk:{address}"


def api_rate(key_id: int) -> str:
    """Requests of one API key in the current minute (portal.api.auth): a count that lives as
    long as the window."""
    return f"{PREFIX}api-rate:{key_id}"
