"""Every Redis key Graphport writes, named in one place.

All keys share one prefix, so an operator can tell Graphport's keys from others in a shared Redis
and tests can clear them by pattern. Each function says what the key holds and who owns it.
"""

from __future__ import annotations

from django.utils.crypto import salted_hmac

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


def _typed(text: str) -> str:
    """What someone typed, lower-cased (case variants share one budget) and keyed-hashed: a key
    never holds it, not even a password typed into the wrong field, and without SECRET_KEY a
    hash cannot be matched against a list of guesses."""
    return salted_hmac("graphport.keys", text.lower()).hexdigest()


#: every sign-in budget: deleting them lets everyone try again at once
LOGIN_FAILURES_PATTERN = f"{PREFIX}login-failures:*"


def login_failures_account(username: str) -> str:
    """Failed password sign-ins for one username in the current window, whether or not it names
    an account (portal.login): a count that lives as long as the window."""
    return f"{PREFIX}login-failures:account:{_typed(username)}"


def login_failures_address(address: str) -> str:
    """Failed password sign-ins from one address in the current window (portal.login)."""
    return f"{PREFIX}login-failures:address:{address}"


#: every password reset budget
PASSWORD_RESETS_PATTERN = f"{PREFIX}password-resets:*"


def password_resets_email(email: str) -> str:
    """Password reset requests for one e-mail address in the current window, whether or not an
    account has it (portal.login)."""
    return f"{PREFIX}password-resets:email:{_typed(email)}"


def password_resets_address(address: str) -> str:
    """Password reset requests from one address in the current window (portal.login)."""
    return f"{PREFIX}password-resets:address:{address}"


#: every budget of Sign in with Microsoft starts
SIGNIN_STARTS_PATTERN = f"{PREFIX}signin-starts:*"


def signin_starts(address: str) -> str:
    """Sign in with Microsoft started from one address in the current window
    (connections.signin_views): each start stores an attempt, so a flood is refused early."""
    return f"{PREFIX}signin-starts:{address}"
