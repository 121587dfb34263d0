"""Tokens: the one entry point for a valid access token, and the refresh of a connection.

Any code that needs to call Graph asks `access_token(connection_id)`.

PostgreSQL is the record of a refresh (docs/architecture.md, "Token refresh"). A refresh holds
the connection's row lock (`select_for_update`) from before the token request until the new
tokens are committed, in one transaction: one refresh per connection at a time across every
process, and whoever waited for the lock finds the winner's tokens. The claim's lease is the
session's `idle_in_transaction_session_timeout`: a worker gone mid-request loses its transaction
after LEASE_SECONDS and frees the row. Nothing in this depends on Redis, so Redis restarting or
going away mid-refresh can neither let a second worker send a refresh token again (reuse
detection would cancel the grant: docs/microsoft.md, "Refresh tokens") nor keep an answer out of
the database.

Redis is a second chance only. Before the write the answer is also kept there (encrypted), with
the tokens it replaces, so a failed write or a worker killed before the commit does not lose a
rotated refresh token: the next refresh applies it first, but only over those same tokens. A
Redis error never stops a refresh or its write.

SQLite (`make run`) has no row locks, but its IMMEDIATE transactions take the database's write
lock at BEGIN: refreshes still run one at a time, at the price of every other writer waiting for
the token request (MICROSOFT_HTTP_TIMEOUT per credential at worst). Fine for one machine; fleets
run PostgreSQL.

Pacing. A token is refreshed five minutes before expiry, or half its lifetime before when it
lives less than ten minutes. Paced callers (Graph requests, the beat dispatch) send no request
during the backoff after a transient failure, nor within MIN_REFRESH_INTERVAL of the last one;
they get the still-valid token, or TransientFailure with the time to retry. Microsoft answers
request loops with AADSTS50196 (docs/microsoft.md, "Error codes and how Graphport classifies
them"). Explicit refreshes (an operator's *Refresh now*, Graph's 401) are not paced.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, OperationalError, transaction
from django.utils import timezone

from connections import audit, credentials, identity, kept_answers, notices, webhook_events
from connections.identity import FailureClass, IdentityError
from connections.models import AuditEvent, Connection, EntraApp, EventType
from core import backoff, logs, metrics

logger = logging.getLogger(__name__)

REFRESH_AHEAD = timedelta(minutes=5)
STILL_VALID_MARGIN = timedelta(seconds=60)
# However many callers ask, paced ones send one token request per connection in this interval.
MIN_REFRESH_INTERVAL = timedelta(seconds=30)
KEEPALIVE_AFTER = timedelta(days=14)  # well inside Microsoft's 90 days of inactivity
LEASE_SECONDS = 3 * settings.MICROSOFT_HTTP_TIMEOUT  # longer than the token requests of a refresh
LOCK_WAIT_SECONDS = 2 * settings.MICROSOFT_HTTP_TIMEOUT
STORE_ATTEMPTS = 3
ALERT_STREAK = 5
BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 3600
# While the access token works, a retry comes within this share of its remaining life, so an
# outage shorter than the refresh margin leaves several tries before the token expires.
BACKOFF_SHARE_OF_LIFE_LEFT = 0.25

RECONNECT_CLASSES = {FailureClass.RECONNECT, FailureClass.CONSENT, FailureClass.USER}
APP_CLASSES = {FailureClass.APP_CREDENTIALS, FailureClass.CONFIGURATION, FailureClass.TENANT}

# PostgreSQL's lock_not_available, raised when a waiter's lock_timeout runs out.
LOCK_NOT_AVAILABLE = "55P03"


class TokenUnavailable(Exception):
    """No valid access token can be had now; `failure_class` says whose move it is."""

    failure_class = FailureClass.UNKNOWN

    def __init__(self, message: str, retry_in: float | None = None):
        super().__init__(message)
        self.retry_in = retry_in


class ReconnectNeeded(TokenUnavailable):
    failure_class = FailureClass.RECONNECT


class AppCredentialsBroken(TokenUnavailable):
    failure_class = FailureClass.APP_CREDENTIALS


class TransientFailure(TokenUnavailable):
    failure_class = FailureClass.TRANSIENT


# --- when ---------------------------------------------------------------------------------------


def refresh_due_at(connection: Connection) -> datetime | None:
    """When the access token should be replaced: REFRESH_AHEAD before it expires, or half its
    lifetime before when that is shorter, or at Microsoft's `refresh_in` if that comes first."""
    expires = connection.access_token_expires_at
    if expires is None:
        return None
    ahead = REFRESH_AHEAD
    if connection.access_token_lifetime:
        ahead = min(ahead, timedelta(seconds=connection.access_token_lifetime) / 2)
    due = expires - ahead
    if connection.refresh_after is not None:
        due = min(due, connection.refresh_after)
    return due


def held_until(connection: Connection) -> datetime | None:
    """Before this, paced callers send no token request: the backoff after a transient failure,
    and MIN_REFRESH_INTERVAL after the last request."""
    times = [connection.next_refresh_at]
    if connection.refresh_requested_at is not None:
        times.append(connection.refresh_requested_at + MIN_REFRESH_INTERVAL)
    return max((t for t in times if t is not None), default=None)


def is_fresh(connection: Connection, now: datetime | None = None) -> bool:
    due = refresh_due_at(connection)
    return bool(connection.access_token) and due is not None and (now or timezone.now()) < due


def needs_keepalive(connection: Connection, now: datetime | None = None) -> bool:
    updated = connection.refresh_token_updated_at
    return (
        connection.kind == Connection.Kind.DELEGATED
        and updated is not None
        and (now or timezone.now()) - updated >= KEEPALIVE_AFTER
    )


# --- the entry point ----------------------------------------------------------------------------


def access_token(connection_id: int) -> str:
    """A valid access token for the connection, refreshed first when it is due."""
    return usable_token(connection_id).access_token


def usable_token(connection_id: int) -> Connection:
    """The connection with a valid access token (and its expiry), refreshed first when it is
    due."""
    connection = Connection.objects.select_related("app").get(pk=connection_id)
    now = timezone.now()
    # While the app's credentials are broken its refreshes pause, but a token Microsoft issued
    # earlier stays good until it expires.
    usable = is_fresh(connection, now) or (_paused(connection) and _still_valid(connection))
    if usable and connection.status in Connection.LIVE_STATUSES:
        return connection
    _check_usable(connection)
    wait = _held(connection, now)
    if wait is not None:
        # Backing off, or a request went out moments ago: no need to queue for the row lock.
        return _wait_out(connection, wait)
    try:
        return refresh(connection_id, paced=True)
    except TransientFailure:
        if _still_valid(connection):
            return connection  # the endpoint failed for now; this token still works
        raise


def _paused(connection: Connection) -> bool:
    return (
        connection.status == Connection.Status.APP_CREDENTIALS_BROKEN
        or connection.app.credentials_status == EntraApp.CredentialStatus.BROKEN
    )


def _still_valid(connection: Connection) -> bool:
    expires = connection.access_token_expires_at
    return (
        bool(connection.access_token)
        and expires is not None
        and expires - timezone.now() > STILL_VALID_MARGIN
    )


def _held(connection: Connection, now: datetime) -> float | None:
    """Seconds before a paced caller may ask the token endpoint, or None if it may now."""
    until = held_until(connection)
    return (until - now).total_seconds() if until is not None and until > now else None


def _wait_out(connection: Connection, wait: float) -> Connection:
    if _still_valid(connection):
        return connection
    raise TransientFailure(
        f"No token request for another {wait:.0f} s: the last one failed or went out moments ago.",
        retry_in=wait,
    )


def _check_usable(connection: Connection) -> None:
    if connection.status == Connection.Status.RECONNECT_NEEDED:
        raise ReconnectNeeded(connection.status_reason or "The user must reconnect.")
    if connection.status in (Connection.Status.DISABLED, Connection.Status.REVOKED):
        raise TokenUnavailable(f"The connection is {connection.get_status_display().lower()}.")
    if _paused(connection):
        # Refreshes for the app pause until its credentials are fixed and verified.
        raise AppCredentialsBroken(
            connection.status_reason
            or connection.app.credentials_detail
            or "App credentials broken."
        )


# --- the refresh --------------------------------------------------------------------------------


@dataclass
class _Answer:
    """A token answer between Microsoft and the commit."""

    fields: dict[str, Any] | None = None
    over: datetime | None = None  # last_refreshed_at of the tokens it replaces, as committed
    kept: str | None = None  # its copy in Redis, if Redis took it


@dataclass
class _Failure:
    connection: Connection
    error: IdentityError


def refresh(
    connection_id: int, *, force: bool = False, keepalive: bool = False, paced: bool = False
) -> Connection:
    """Refresh unless, once the row lock is held, it turns out someone else just did.

    `force` refreshes a token that looks fresh (an operator's *Refresh now*, Graph's 401);
    `keepalive` also refreshes when only the refresh token is idle; `paced` is for one caller
    among many (Graph requests, the beat dispatch): during a backoff or within
    MIN_REFRESH_INTERVAL of the last request it gets the still-valid token or TransientFailure.
    """
    # The tokens stored before waiting for the lock: if they changed while we waited, the
    # refresh that held the lock did our work.
    seen, tenant_id = Connection.objects.filter(pk=connection_id).values_list(
        "last_refreshed_at", "app__tenant_id"
    ).first() or (None, None)
    with logs.bound(connection_id=connection_id, tenant_id=tenant_id):
        return _refresh(connection_id, seen, force=force, keepalive=keepalive, paced=paced)


def _refresh(
    connection_id: int, seen: datetime | None, *, force: bool, keepalive: bool, paced: bool
) -> Connection:
    answer = _Answer()
    try:
        # Durable: the tokens are committed when this block ends, never rolled back by a caller.
        with transaction.atomic(durable=True):
            connection = _claim(connection_id)
            outcome = _refresh_claimed(
                connection, seen, answer, force=force, keepalive=keepalive, paced=paced
            )
    except DatabaseError:
        if answer.fields is None:
            raise
        logger.warning(
            "storing refreshed tokens of connection %s failed", connection_id, exc_info=True
        )
        return _store_again(connection_id, answer)
    if isinstance(outcome, _Failure):
        raise _failed(outcome.connection, outcome.error) from outcome.error
    return outcome


def _claim(connection_id: int) -> Connection:
    """Lock the connection's row until the transaction, token request included, ends."""
    db = transaction.get_connection()
    if db.vendor == "postgresql":
        with db.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, true), "
                "set_config('idle_in_transaction_session_timeout', %s, true)",
                [f"{LOCK_WAIT_SECONDS}s", f"{LEASE_SECONDS}s"],
            )
    try:
        return (
            Connection.objects.select_for_update(of=("self",))
            .select_related("app")
            .get(pk=connection_id)
        )
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        raise TransientFailure(
            "Another worker is refreshing this connection.", retry_in=5
        ) from None


def _refresh_claimed(
    connection: Connection,
    seen: datetime | None,
    answer: _Answer,
    *,
    force: bool,
    keepalive: bool,
    paced: bool,
) -> Connection | _Failure:
    _check_usable(connection)
    if connection.last_refreshed_at != seen:
        return connection  # refreshed while we waited for the lock: use the winner's tokens
    answer.over = connection.last_refreshed_at
    _apply_kept(connection)
    now = timezone.now()
    if (
        not force
        and is_fresh(connection, now)
        and not (keepalive and needs_keepalive(connection, now))
    ):
        return connection
    if paced and not force:
        wait = _held(connection, now)
        if wait is not None:
            return _wait_out(connection, wait)
    try:
        token = _request(connection)
    except IdentityError as exc:
        metrics.TOKEN_REFRESHES.labels(
            outcome=metrics.RefreshOutcome.FAILED, failure_class=exc.failure_class
        ).inc()
        logger.warning(
            "connection %s: token refresh failed (%s): %s", connection.pk, exc.failure_class, exc
        )
        _hold_off(connection, exc, now)
        return _Failure(connection, exc)
    metrics.TOKEN_REFRESHES.labels(
        outcome=metrics.RefreshOutcome.SUCCEEDED, failure_class=metrics.NO_FAILURE
    ).inc()
    answer.fields = {**token_fields(token, now), "refresh_requested_at": now}
    answer.kept = kept_answers.keep(connection.pk, answer.fields, answer.over)
    if _write(connection.pk, answer.fields, connection.last_refreshed_at):
        for name, value in answer.fields.items():
            setattr(connection, name, value)
        audit.record(AuditEvent.Kind.REFRESHED, "Token refreshed.", connection=connection)
        logger.info(
            "connection %s: token refreshed, valid until %s",
            connection.pk,
            connection.access_token_expires_at.isoformat(timespec="seconds"),
        )
    if answer.kept:
        kept = answer.kept
        transaction.on_commit(lambda: kept_answers.drop(connection.pk, kept))
    return connection


def _request(connection: Connection) -> dict[str, Any]:
    app = connection.app
    if connection.kind == Connection.Kind.APPLICATION:
        token_url = app.token_url_for(connection.ms_tenant_id)
        return credentials.with_each(
            app,
            token_url,
            lambda credential: identity.app_token(
                token_url, app.client_id, credential, app.app_only_scope
            ),
        )
    if not connection.refresh_token:
        raise IdentityError(
            error="invalid_grant", description="No refresh token is stored.", codes=[70000]
        )
    scopes = connection.granted_scopes.split() or app.requested_scopes
    if "offline_access" not in scopes:
        scopes = [*scopes, "offline_access"]  # Microsoft leaves it out of the granted list
    return credentials.with_each(
        app,
        app.token_url,
        lambda credential: identity.refresh(
            app.token_url, app.client_id, credential, connection.refresh_token, scopes
        ),
    )


# --- storing ------------------------------------------------------------------------------------


def token_fields(token: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The connection's columns for a token response (code exchange, refresh, app token)."""
    expires_in = int(token.get("expires_in") or 3600)
    fields: dict[str, Any] = {
        "access_token": token["access_token"],
        "access_token_expires_at": now + timedelta(seconds=expires_in),
        "access_token_lifetime": expires_in,
        "refresh_after": (
            now + timedelta(seconds=int(token["refresh_in"])) if token.get("refresh_in") else None
        ),
        "last_refreshed_at": now,
        "failure_streak": 0,
        "next_refresh_at": None,
        "status": Connection.Status.ACTIVE,
        "status_reason": "",
    }
    if token.get("refresh_token"):
        fields["refresh_token"] = token["refresh_token"]
        fields["refresh_token_updated_at"] = now
    scope = token.get("scope")
    if scope:
        fields["granted_scopes"] = scope if isinstance(scope, str) else " ".join(scope)
    if token.get("roles") is not None:  # an app token: its application permissions
        fields["granted_scopes"] = " ".join(token["roles"])
    return fields


def _write(connection_id: int, fields: dict[str, Any], over: datetime | None) -> bool:
    """One UPDATE for both tokens, only over the tokens written at `over` and only while the
    connection is live: a disconnected connection, or tokens written since, are left alone."""
    updated = Connection.objects.filter(
        pk=connection_id, status__in=Connection.LIVE_STATUSES, last_refreshed_at=over
    ).update(**fields, updated_at=timezone.now())
    return bool(updated)


def _store_again(connection_id: int, answer: _Answer) -> Connection:
    """The write or the commit failed and the row lock went with the transaction: retry the
    write alone, still only over the tokens the answer replaces."""
    assert answer.fields is not None
    for attempt in range(1, STORE_ATTEMPTS):
        time.sleep(0.2 * 2 ** (attempt - 1))
        try:
            written = _write(connection_id, answer.fields, answer.over)
            connection = Connection.objects.select_related("app").get(pk=connection_id)
        except DatabaseError:
            logger.warning(
                "storing refreshed tokens of connection %s failed", connection_id, exc_info=True
            )
            continue
        if answer.kept:
            kept_answers.drop(connection_id, answer.kept)
        if written:
            audit.record(AuditEvent.Kind.REFRESHED, "Token refreshed.", connection=connection)
        else:
            # Tokens written since (a reconnect, or the next refresh applying our kept copy),
            # or the connection is no longer live: what is stored now is what counts.
            _check_usable(connection)
        return connection
    if answer.kept:
        raise TransientFailure(
            "The database refused the new tokens; they are kept and applied on the next refresh.",
            retry_in=30,
        )
    logger.error(
        "connection %s: the rotated refresh token reached neither the database nor Redis",
        connection_id,
    )
    raise TransientFailure(
        "The database refused the new tokens and Redis could not keep them.", retry_in=30
    )


# --- the copy kept in Redis ---------------------------------------------------------------------


def _apply_kept(connection: Connection) -> None:
    """Apply a token answer kept by a refresh whose write failed, if the tokens it replaces are
    still the stored ones; otherwise tokens were written after it, and it is dropped."""
    kept = kept_answers.load(connection.pk)
    if kept is None:
        return
    if kept.over != connection.last_refreshed_at or not _write(
        connection.pk, kept.fields, kept.over
    ):
        logger.info("connection %s: stale kept token answer dropped", connection.pk)
        kept_answers.drop(connection.pk, kept.value)
        return
    for name, value in kept.fields.items():
        setattr(connection, name, value)
    transaction.on_commit(lambda: kept_answers.drop(connection.pk, kept.value))
    logger.info("applied the kept token answer of connection %s", connection.pk)


# --- failures -----------------------------------------------------------------------------------


def _reason(exc: IdentityError) -> str:
    return exc.explanation + (f" ({exc.aadsts})" if exc.code else "")


def _paused_reason(reason: str) -> str:
    return f"Paused: the app's credentials are broken. {reason}"


def _backoff(connection: Connection, streak: int, now: datetime) -> float:
    """Seconds before the next try: never under MIN_REFRESH_INTERVAL, then exponential with full
    jitter, and within a share of the access token's remaining life while it works."""
    floor = MIN_REFRESH_INTERVAL.total_seconds()
    cap = float(BACKOFF_CAP_SECONDS)
    expires = connection.access_token_expires_at
    if expires is not None and expires > now:
        left = (expires - now).total_seconds()
        cap = min(cap, max(0.0, left * BACKOFF_SHARE_OF_LIFE_LEFT - floor))
    return floor + backoff.full_jitter(streak, base=BACKOFF_BASE_SECONDS, cap=cap)


def _hold_off(connection: Connection, exc: IdentityError, now: datetime) -> None:
    """Record a failed refresh on the row while it is still claimed, so that whoever waits for
    the lock sees it; alerts and notices follow the commit (_failed)."""
    klass = exc.failure_class
    fields: dict[str, Any]
    # After a reconnect-needed or app-broken failure refreshes stop until someone acts (a
    # reconnect, credentials verified): that, not the minimum interval, frees the next request.
    if klass in RECONNECT_CLASSES:
        fields = {
            "status": Connection.Status.RECONNECT_NEEDED,
            "status_reason": _reason(exc),
            "next_refresh_at": None,
        }
    elif klass in APP_CLASSES:
        fields = {
            "status": Connection.Status.APP_CREDENTIALS_BROKEN,
            "status_reason": _paused_reason(_reason(exc)),
        }
    else:
        streak = connection.failure_streak + 1
        delay = _backoff(connection, streak, now)
        fields = {
            "failure_streak": streak,
            "next_refresh_at": now + timedelta(seconds=delay),
            "refresh_requested_at": now,
        }
    Connection.objects.filter(pk=connection.pk).update(**fields)
    if fields.get("status") == Connection.Status.RECONNECT_NEEDED != connection.status:
        # In the refresh's transaction: the event commits with the status, or not at all.
        connection.status = fields["status"]
        webhook_events.connection_event(
            EventType.CONNECTION_RECONNECT_NEEDED, connection, reason=fields["status_reason"]
        )
    for name, value in fields.items():
        setattr(connection, name, value)


def _failed(connection: Connection, exc: IdentityError) -> TokenUnavailable:
    """After the commit: the audit trail, notices, and the app's other connections."""
    klass = exc.failure_class
    reason = _reason(exc)
    if klass in RECONNECT_CLASSES:
        return _reconnect_needed(connection, reason, exc)
    if klass in APP_CLASSES:
        return _app_broken(connection, reason, exc)
    streak = connection.failure_streak
    audit.record(
        AuditEvent.Kind.REFRESH_FAILED,
        reason,
        connection=connection,
        streak=streak,
        code=exc.aadsts,
        trace_id=exc.trace_id,
    )
    if streak == ALERT_STREAK:
        notices.refresh_failing(connection, streak, reason)
        audit.record(
            AuditEvent.Kind.REFRESH_ALERT,
            f"{streak} failures in a row: {reason}",
            connection=connection,
        )
    retry_in = (connection.next_refresh_at - timezone.now()).total_seconds()
    return TransientFailure(reason, retry_in=max(0.0, retry_in))


def _reconnect_needed(connection: Connection, reason: str, exc: IdentityError) -> ReconnectNeeded:
    audit.record(
        AuditEvent.Kind.RECONNECT_NEEDED,
        reason,
        connection=connection,
        code=exc.aadsts,
        trace_id=exc.trace_id,
    )
    notices.reconnect_needed(connection, reason)
    return ReconnectNeeded(reason)


def _app_broken(connection: Connection, reason: str, exc: IdentityError) -> AppCredentialsBroken:
    """Flag the app, keep its connections' tokens, pause their refreshes, alert its admins.
    Outside the refresh's claim: the app's other connections may be claimed by refreshes of
    their own, and waiting for them while holding this one could deadlock."""
    app = connection.app
    with transaction.atomic():
        flagged = (
            EntraApp.objects.filter(pk=app.pk)
            .exclude(credentials_status=EntraApp.CredentialStatus.BROKEN)
            .update(
                credentials_status=EntraApp.CredentialStatus.BROKEN,
                credentials_detail=reason,
                credentials_checked_at=timezone.now(),
            )
        )
        Connection.objects.filter(app=app, status=Connection.Status.ACTIVE).update(
            status=Connection.Status.APP_CREDENTIALS_BROKEN, status_reason=_paused_reason(reason)
        )
        if flagged:
            webhook_events.credentials_broken(app, reason)
    if flagged:  # only the first failure alerts; the others find the app already flagged
        audit.record(
            AuditEvent.Kind.APP_PAUSED, reason, app=app, code=exc.aadsts, trace_id=exc.trace_id
        )
        notices.app_credentials_broken(app, reason)
    return AppCredentialsBroken(reason)
