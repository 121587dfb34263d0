"""Celery tasks of the tokens queue, and of the webhooks queue (routed by name in settings): thin,
the work is in connections.tokens, .fleet and .webhooks."""

from __future__ import annotations

import random

from celery import shared_task

from connections import expiry, fleet, retention, tokens, webhooks
from core import keys, redis_client

# A connection already queued for a refresh is not queued again by the next beat tick.
QUEUED_TTL = 300


@shared_task
def dispatch_token_refreshes() -> int:
    """Every minute: enqueue refreshes for connections whose tokens expire soon, and keep-alive
    refreshes for refresh tokens unused for two weeks. Returns how many were enqueued."""
    client = redis_client.shared()
    enqueued = 0
    for pk, countdown, keepalive in fleet.due():
        if not client.set(keys.token_queued(pk), 1, nx=True, ex=QUEUED_TTL + int(countdown)):
            continue
        # Jitter spreads a fleet that expires in the same second over a few seconds.
        refresh_connection.apply_async(
            (pk,), {"keepalive": keepalive}, countdown=countdown + random.uniform(0, 5)
        )
        enqueued += 1
    return enqueued


@shared_task
def refresh_connection(connection_id: int, keepalive: bool = False) -> str:
    """Refresh one connection. Failures are recorded on the connection (status, backoff) by
    connections.tokens; nothing is retried here in a loop, and a task that finds the connection
    backing off, or refreshed moments ago, sends no request (paced)."""
    try:
        tokens.refresh(connection_id, keepalive=keepalive, paced=True)
    except tokens.TokenUnavailable as exc:
        return f"{exc.failure_class}: {exc}"
    finally:
        redis_client.shared().delete(keys.token_queued(connection_id))
    return "ok"


@shared_task
def warn_expiring_secrets() -> int:
    return expiry.warn_expiring_secrets()


@shared_task
def purge_history() -> dict[str, int]:
    """Daily: authorization attempts and audit events past their retention period."""
    return retention.purge()


@shared_task
def deliver_webhooks(endpoint_id: int) -> str:
    """Send one endpoint's due webhooks for a bounded slice (queue `webhooks`); asks for
    another task itself when more is due."""
    report = webhooks.deliver(endpoint_id)
    return "left to another task, or disabled" if report is None else str(report)


@shared_task
def sweep_webhooks() -> int:
    """Every 10 seconds: a task for each endpoint with due deliveries that no live task holds.
    Returns how many were asked for."""
    return webhooks.sweep()
