"""Tokens: the one entry point for a valid access token, and the refresh of a connection.

Any code that needs to call Graph asks `access_token(connection_id)`. A refresh runs under a
per-connection Redis lock with a lease, so one refresh per connection happens at a time across
every process and machine; whoever waited re-reads the row and uses the first caller's result.
The new access and refresh tokens are written in one UPDATE. Before that write, the token
response is kept (encrypted) in Redis, so a database failure, or a worker killed between the
answer and the write, never loses a rotated refresh token: the next refresh applies it first.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from connections import audit, credentials, identity, notices
from connections.identity import FailureClass, IdentityError
from connections.models import AuditEvent, Connection, EntraApp
from core import backoff, encryption, keys, redis_client

logger = logging.getLogger(__name__)

REFRESH_AHEAD = timedelta(minutes=5)
STILL_VALID_MARGIN = timedelta(seconds=60)
KEEPALIVE_AFTER = timedelta(days=14)  # well inside Microsoft's 90 days of inactivity
LOCK_LEASE_SECONDS = 3 * settings.MICROSOFT_HTTP_TIMEOUT  # longer than any token request
LOCK_WAIT_SECONDS = 2 * settings.MICROSOFT_HTTP_TIMEOUT
PENDING_TTL_SECONDS = 30 * 24 * 3600
STORE_ATTEMPTS = 3
ALERT_STREAK = 5
BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 3600

RECONNECT_CLASSES = {FailureClass.RECONNECT, FailureClass.CONSENT, FailureClass.USER}
APP_CLASSES = {FailureClass.APP_CREDENTIALS, FailureClass.CONFIGURATION, FailureClass.TENANT}


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


def is_fresh(connection: Connection, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    if not connection.access_token or connection.access_token_expires_at is None:
        return False
    if connection.refresh_after is not None and now >= connection.refresh_after:
        return False
    return connection.access_token_expires_at - now > REFRESH_AHEAD


def needs_keepalive(connection: Connection, now: datetime | None = None) -> bool:
    updated = connection.refresh_token_updated_at
    return (
        connection.kind == Connection.Kind.DELEGATED
        and updated is not None
        and (now or timezone.now()) - updated >= KEEPALIVE_AFTER
    )


# --- the entry point ----------------------------------------------------------------------------


def access_token(connection_id: int) -> str:
    """A valid access token for the connection, refreshed first when it expires soon."""
    connection = Connection.objects.select_related("app").get(pk=connection_id)
    # While the app's credentials are broken its refreshes pause, but a token Microsoft issued
    # earlier stays good until it expires.
    usable = is_fresh(connection) or (_paused(connection) and _still_valid(connection))
    if usable and connection.status in Connection.LIVE_STATUSES:
        return connection.access_token
    _check_usable(connection)
    return refresh(connection_id).access_token


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
        and expires - timezone.now() > (STILL_VALID_MARGIN)
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


def refresh(connection_id: int, *, force: bool = False, keepalive: bool = False) -> Connection:
    """Refresh unless, once the lock is held, it turns out someone else already did."""
    lock = redis_client.shared().lock(
        keys.token_refresh_lock(connection_id),
        timeout=LOCK_LEASE_SECONDS,
        blocking_timeout=LOCK_WAIT_SECONDS,
    )
    if not lock.acquire():
        raise TransientFailure("Another worker is refreshing this connection.", retry_in=5)
    try:
        apply_pending(connection_id)
        connection = Connection.objects.select_related("app", "user").get(pk=connection_id)
        _check_usable(connection)
        now = timezone.now()
        if (
            not force
            and is_fresh(connection, now)
            and not (keepalive and needs_keepalive(connection, now))
        ):
            return connection  # the caller before us refreshed: use its result
        try:
            token = _request(connection)
        except IdentityError as exc:
            raise _failed(connection, exc) from exc
        return _store(connection, token, now)
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            logger.warning("refresh lock of connection %s expired before release", connection_id)


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
    return fields


def _serialise(fields: dict[str, Any]) -> str:
    return json.dumps(
        {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}
    )


def _deserialise(text: str) -> dict[str, Any]:
    fields = json.loads(text)
    for key in (
        "access_token_expires_at",
        "refresh_after",
        "last_refreshed_at",
        "refresh_token_updated_at",
    ):
        if fields.get(key):
            fields[key] = datetime.fromisoformat(fields[key])
    return fields


def _write(connection_id: int, fields: dict[str, Any]) -> bool:
    """One UPDATE for both tokens; a disconnected or disabled connection is left alone."""
    with transaction.atomic():
        updated = Connection.objects.filter(
            pk=connection_id, status__in=Connection.LIVE_STATUSES
        ).update(**fields, updated_at=timezone.now())
    return bool(updated)


def _store(connection: Connection, token: dict[str, Any], now: datetime) -> Connection:
    fields = token_fields(token, now)
    pending = keys.token_pending(connection.pk)
    # Write-ahead: the answer is kept until the database has it.
    redis_client.shared().set(
        pending, encryption.encrypt(_serialise(fields)), ex=PENDING_TTL_SECONDS
    )
    for attempt in range(STORE_ATTEMPTS):
        try:
            written = _write(connection.pk, fields)
            break
        except DatabaseError:
            logger.warning(
                "storing refreshed tokens of connection %s failed", connection.pk, exc_info=True
            )
            if attempt == STORE_ATTEMPTS - 1:
                raise TransientFailure(
                    "The database refused the new tokens; they are kept and applied on the next "
                    "refresh.",
                    retry_in=30,
                ) from None
            time.sleep(0.2 * 2**attempt)
    redis_client.shared().delete(pending)
    if written:
        for name, value in fields.items():
            setattr(connection, name, value)
        audit.record(AuditEvent.Kind.REFRESHED, "Token refreshed.", connection=connection)
    return connection


def apply_pending(connection_id: int) -> bool:
    """Apply a token response that was received but never stored (see _store)."""
    pending = redis_client.shared().get(keys.token_pending(connection_id))
    if pending is None:
        return False
    fields = _deserialise(encryption.decrypt(pending.decode(), where="a pending token response"))
    _write(connection_id, fields)
    redis_client.shared().delete(keys.token_pending(connection_id))
    logger.info("applied the pending token response of connection %s", connection_id)
    return True


# --- failures -----------------------------------------------------------------------------------


def _failed(connection: Connection, exc: IdentityError) -> TokenUnavailable:
    klass = exc.failure_class
    reason = exc.explanation + (f" ({exc.aadsts})" if exc.code else "")
    if klass in RECONNECT_CLASSES:
        return _reconnect_needed(connection, reason, exc)
    if klass in APP_CLASSES:
        return _app_broken(connection, reason, exc)
    streak = connection.failure_streak + 1
    delay = backoff.full_jitter(streak, base=BACKOFF_BASE_SECONDS, cap=BACKOFF_CAP_SECONDS)
    Connection.objects.filter(pk=connection.pk).update(
        failure_streak=streak, next_refresh_at=timezone.now() + timedelta(seconds=delay)
    )
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
    return TransientFailure(reason, retry_in=delay)


def _reconnect_needed(connection: Connection, reason: str, exc: IdentityError) -> ReconnectNeeded:
    Connection.objects.filter(pk=connection.pk).update(
        status=Connection.Status.RECONNECT_NEEDED, status_reason=reason, next_refresh_at=None
    )
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
    """Flag the app, keep its connections' tokens, pause their refreshes, alert its admins."""
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
            status=Connection.Status.APP_CREDENTIALS_BROKEN,
            status_reason=f"Paused: the app's credentials are broken. {reason}",
        )
    if flagged:  # only the first failure alerts; the others find the app already flagged
        audit.record(
            AuditEvent.Kind.APP_PAUSED, reason, app=app, code=exc.aadsts, trace_id=exc.trace_id
        )
        notices.app_credentials_broken(app, reason)
    return AppCredentialsBroken(reason)
