"""One Redis client per process for locks, budgets and markers (REDIS_URL).

redis-py pools its connections and starts a new pool after a fork, so Celery's prefork children
can share this module-level client safely. /healthz keeps its own client with short timeouts.
"""

from __future__ import annotations

import redis
from django.conf import settings

_clients: dict[str, redis.Redis] = {}


def shared() -> redis.Redis:
    url = settings.REDIS_URL  # keyed by URL: tests point settings at another server
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url)
    return client
