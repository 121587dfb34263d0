"""What /healthz checks: the database, Redis, and that at least one Celery worker answers.

/healthz is public and polled by load balancers, so none of it is done per request: a process
checks the database and Redis at most once in CHECK_SECONDS (concurrent requests wait for that
one check rather than each making their own) and pings the workers at most once in
WORKER_ANSWER_SECONDS, in the background."""

from __future__ import annotations

import logging
import threading
import time

import redis
from django.conf import settings
from django.db import connection

from portal.celery import app as celery_app

# /healthz is public: it names what is down, and the details (hosts, users) go to the log only.
logger = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
PING_TIMEOUT = 1.0
# /healthz is public and polled, and a worker ping is a broadcast to every worker: each web
# process pings at most once in this long, in the background, and answers from the last ping.
WORKER_ANSWER_SECONDS = 5.0


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


def ping_worker(broker_url: str) -> str | None:
    """Broadcast a ping; done at the first answer (`limit=1`), so only a missing worker costs
    the whole timeout."""
    try:
        with celery_app.connection_for_write(broker_url) as broker:
            replies = celery_app.control.ping(timeout=PING_TIMEOUT, connection=broker, limit=1)
    except Exception as exc:  # broker unreachable, connection refused, ...
        logger.warning("healthz: worker ping failed", exc_info=True)
        return f"ping failed ({type(exc).__name__})"
    if not replies:
        return f"no Celery worker answered a ping within {PING_TIMEOUT:g} s"
    return None


class WorkerAnswers:
    """The last ping's answer per broker, kept for WORKER_ANSWER_SECONDS.

    A request that finds the answer older than that starts one ping in the background and is
    answered from the last one, so no request waits for a ping (a missing worker costs the whole
    timeout) except the first of a process, which has nothing else to say. A worker that goes
    away therefore shows as down one ping after the answer ran out.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, str | None]] = {}  # broker -> (monotonic, error)
        self._pings: dict[str, threading.Thread] = {}

    def check(self, broker_url: str) -> str | None:
        with self._lock:
            known = self._answers.get(broker_url)
            if known and time.monotonic() - known[0] < WORKER_ANSWER_SECONDS:
                return known[1]
            ping = self._pings.get(broker_url)
            if ping is None:
                ping = self._pings[broker_url] = threading.Thread(
                    target=self._ping, args=(broker_url,), name="healthz-ping", daemon=True
                )
                ping.start()
        if known:
            return known[1]
        ping.join(PING_TIMEOUT + 10)  # a broker that accepts and then hangs: not for ever
        with self._lock:
            known = self._answers.get(broker_url)
        return known[1] if known else "ping unanswered (the broker did not respond)"

    def _ping(self, broker_url: str) -> None:
        error = "ping failed"
        try:
            error = ping_worker(broker_url)
        finally:
            with self._lock:
                self._answers[broker_url] = (time.monotonic(), error)
                del self._pings[broker_url]


worker_answers = WorkerAnswers()


def check_worker() -> str | None:
    return worker_answers.check(settings.CELERY_BROKER_URL)


class DirectChecks:
    """The database's and Redis's answers, kept for CHECK_SECONDS per (database, Redis)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, str], tuple[float, dict[str, dict[str, str]]]] = {}

    def status(self) -> dict[str, dict[str, str]]:
        key = (str(settings.DATABASES["default"]["NAME"]), settings.REDIS_URL)
        with self._lock:
            known = self._answers.get(key)
            if known and time.monotonic() - known[0] < CHECK_SECONDS:
                return known[1]
            result = {}
            for name, check in (("database", check_database), ("redis", check_redis)):
                error = check()
                result[name] = {"status": "down", "error": error} if error else {"status": "up"}
            self._answers[key] = (time.monotonic(), result)
        return result


direct_checks = DirectChecks()


def status() -> dict[str, dict[str, str]]:
    result = dict(direct_checks.status())
    if result["redis"]["status"] == "down":
        # The ping goes through Redis: without it the worker's state is unknown, not healthy.
        result["worker"] = {"status": "down", "error": "unknown: Redis, the broker, is down"}
    else:
        error = check_worker()
        result["worker"] = {"status": "down", "error": error} if error else {"status": "up"}
    return result
