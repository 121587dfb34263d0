"""A second chance for a token answer whose database write fails: an encrypted copy in Redis.

A refresh keeps the answer here before writing it (connections.tokens). If the write or its commit
fails, or the worker dies before the commit, the next refresh of the connection applies the copy
first, but only over the tokens the answer replaced (`over`, their `last_refreshed_at`): a copy
never overwrites tokens written after it, such as a reconnect's. Redis errors are logged and
never stop a refresh: the database, not this copy, is the record of a refresh.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from django.core.exceptions import FieldDoesNotExist
from django.db import models

from connections.models import Connection
from core import encryption, keys, redis_client

logger = logging.getLogger(__name__)

TTL_SECONDS = 30 * 24 * 3600

# Delete a kept copy only if it is still the one we know: another refresh may have kept a newer.
_DELETE_IF_SAME = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Kept:
    value: str  # the encrypted copy as stored: dropping it checks that it still is this one
    over: datetime | None  # last_refreshed_at of the tokens the answer replaces
    fields: dict[str, Any]  # the connection's columns to write


def keep(connection_id: int, fields: dict[str, Any], over: datetime | None) -> str | None:
    """Keep the answer's columns (encrypted) until the commit; None when Redis refused them."""
    payload = {
        "over": over.isoformat() if over else None,
        "fields": {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in fields.items()
        },
    }
    value = encryption.encrypt(json.dumps(payload))
    try:
        redis_client.shared().set(keys.token_pending(connection_id), value, ex=TTL_SECONDS)
    except redis.RedisError:
        logger.warning("Redis could not keep the token answer of connection %s", connection_id)
        return None
    return value


def load(connection_id: int) -> Kept | None:
    """The connection's kept answer, if any; an unusable one (no key opens it, an old format) is
    dropped."""
    key = keys.token_pending(connection_id)
    try:
        raw = redis_client.shared().get(key)
    except redis.RedisError:
        logger.warning("Redis unreachable: no kept token answer of connection %s", connection_id)
        return None
    if raw is None:
        return None
    value = raw.decode()
    try:
        payload = json.loads(encryption.decrypt(value, where=f"Redis {key}"))
        over = datetime.fromisoformat(payload["over"]) if payload["over"] else None
        fields = {
            name: datetime.fromisoformat(v)
            if v and isinstance(Connection._meta.get_field(name), models.DateTimeField)
            else v
            for name, v in payload["fields"].items()
        }
    except (encryption.UndecryptableValue, FieldDoesNotExist, ValueError, KeyError, TypeError):
        logger.exception("connection %s: unusable kept token answer dropped", connection_id)
        drop(connection_id, value)
        return None
    return Kept(value, over, fields)


def drop(connection_id: int, value: str) -> None:
    try:
        redis_client.shared().eval(_DELETE_IF_SAME, 1, keys.token_pending(connection_id), value)
    except redis.RedisError:
        # Harmless: a copy only ever applies over the tokens it replaces.
        logger.warning("Redis could not drop the kept token answer of %s", connection_id)


def forget(connection_id: int) -> None:
    """On disconnect: no token copy outlives the connection's tokens."""
    try:
        redis_client.shared().delete(keys.token_pending(connection_id))
    except redis.RedisError:
        logger.warning("Redis could not forget the kept token answer of %s", connection_id)


def reencrypt_all() -> tuple[int, int]:
    """Re-encrypt every kept answer with the newest key (rotate_encryption_keys): how many were,
    and how many no key opens (left for their connection's next refresh to drop). Raises
    redis.RedisError if Redis cannot be read: the old key must stay until this succeeds."""
    client = redis_client.shared()
    rotated = unreadable = 0
    for key in client.scan_iter(keys.TOKEN_PENDING_PATTERN, count=500):
        with client.pipeline() as pipe:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                if raw is None or not encryption.needs_rotation(raw.decode()):
                    continue
                fresh = encryption.rotate(raw.decode(), where=f"Redis {key.decode()}")
                pipe.multi()
                pipe.set(key, fresh, keepttl=True)
                pipe.execute()
                rotated += 1
            except encryption.UndecryptableValue:
                unreadable += 1
            except redis.WatchError:
                pass  # replaced (with the newest key) or dropped meanwhile
    return rotated, unreadable
