"""What /healthz checks: the database, Redis, and that at least one Celery worker answers."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection

from portal.celery import app as celery_app

PING_TIMEOUT = 1.0


def check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any driver error means "down"
        return f"{type(exc).__name__}: {exc}"
    return None


def check_redis() -> str | None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def check_worker() -> str | None:
    try:
        replies = celery_app.control.ping(timeout=PING_TIMEOUT)
    except Exception as exc:  # broker unreachable, connection refused, ...
        return f"{type(exc).__name__}: {exc}"
    if not replies:
        return f"no Celery worker answered a ping within {PING_TIMEOUT:g} s"
    return None


def status() -> dict[str, dict[str, str]]:
    checks = {"database": check_database, "redis": check_redis}
    result = {}
    for name, check in checks.items():
        error = check()
        result[name] = {"status": "down", "error": error} if error else {"status": "up"}
    if result["redis"]["status"] == "down":
        # The ping goes through Redis: without it the worker's state is unknown, not healthy.
        result["worker"] = {"status": "down", "error": "unknown: Redis, the broker, is down"}
    else:
        error = check_worker()
        result["worker"] = {"status": "down", "error": error} if error else {"status": "up"}
    return result
