"""What /healthz checks: the database, Redis, and that at least one Celery worker answers."""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import connection

from portal.celery import app as celery_app

# /healthz is public: it names what is down, and the details (hosts, users) go to the log only.
logger = logging.getLogger(__name__)

PING_TIMEOUT = 1.0


def check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any driver error means "down"
        logger.warning("healthz: database check failed", exc_info=True)
        return f"query failed ({type(exc).__name__})"
    return None


def check_redis() -> str | None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        logger.warning("healthz: Redis check failed", exc_info=True)
        return f"ping failed ({type(exc).__name__})"
    finally:
        client.close()
    return None


def check_worker() -> str | None:
    try:
        with celery_app.connection_for_write(settings.CELERY_BROKER_URL) as connection:
            replies = celery_app.control.ping(timeout=PING_TIMEOUT, connection=connection)
    except Exception as exc:  # broker unreachable, connection refused, ...
        logger.warning("healthz: worker ping failed", exc_info=True)
        return f"ping failed ({type(exc).__name__})"
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
