"""The records changes feed: one connection's records of one resource, in the order they changed.

A consumer starts without a cursor and follows `next_cursor` forever; it sees every record's
latest state and every deletion (a tombstone: the row with `deleted_at` set) at least once, also
while syncs write. The order is (feed_seq, id): graphsync.store stamps every row a transaction
writes with a seq taken under the feed's row lock, so seqs are handed out in commit order and no
row can appear behind a position a reader has passed (docs/architecture.md, "The records feed").
A record written again moves to the end of the feed, so it is read again with its new state.

Cursors are opaque: the position (feed_seq, id) signed together with the connection and resource
it belongs to, so a consumer can neither forge a position nor carry one over to another feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from django.core import signing
from django.db.models import BigIntegerField, Func, QuerySet, TextField, Value
from django.db.models.functions import Cast
from django.db.models.lookups import GreaterThan

from connections.models import Connection
from graphsync.models import Record

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

_SALT = "graphsync.feed.cursor"
_START = (0, 0)  # before every row: seqs start at 0, ids at 1


class BadCursor(ValueError):
    """A cursor this feed did not issue, or issued for another connection or resource."""


@dataclass(frozen=True)
class FeedPage:
    # Named rows with the fields of _COLUMNS: a Record's, and `raw`, its document as JSON text.
    records: list[Any]
    next_cursor: str  # where the next page starts; the same position when nothing was new
    has_more: bool  # more rows were already there after this page


def page(
    connection: Connection,
    resource: str,
    cursor: str | None,
    limit: int,
    modified_after: datetime | None = None,
) -> FeedPage:
    """The changes after `cursor` (from the start when None), at most `limit` of them, in one
    query whatever the feed's size. `modified_after` leaves out rows last changed at or before
    it; the cursor, not this, is what guarantees nothing is missed."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit: must be from 1 to {MAX_LIMIT}, not {limit}")
    position = _position(cursor, connection.pk, resource) if cursor else _START
    rows = _changes(connection.pk, resource, position)
    if modified_after is not None:
        rows = rows.filter(updated_at__gt=modified_after)
    found = list(rows[: limit + 1])
    has_more = len(found) > limit
    found = found[:limit]
    if found:
        position = (found[-1].feed_seq, found[-1].id)
    return FeedPage(found, _cursor(connection.pk, resource, position), has_more)


def render(found: FeedPage) -> bytes:
    """The page as the API's JSON body. Documents go out as the database holds them, unparsed."""
    return orjson.dumps(
        {
            "records": [_record(row) for row in found.records],
            "next_cursor": found.next_cursor,
            "has_more": found.has_more,
        },
        option=orjson.OPT_UTC_Z,
    )


# What a page reads of each record: named rows rather than model instances, which cost as much
# as everything else a page does. `raw` is the document as the text PostgreSQL keeps in its
# `json` column, embedded in the body as it is (orjson.Fragment): parsing a thousand documents
# only to serialise them again would cost more than the rest of the page.
_COLUMNS = (
    "id",
    "graph_id",
    "job_id",
    "resource",
    "deleted_at",
    "created_at",
    "updated_at",
    "feed_seq",
    "raw",
)


def _changes(connection_id: int, resource: str, position: tuple[int, int]) -> QuerySet:
    return (
        Record.objects.filter(connection_id=connection_id, resource=resource)
        .filter(_after(position))
        .annotate(raw=Cast("data", TextField()))
        .order_by("feed_seq", "id")
        .values_list(*_COLUMNS, named=True)
    )


class _Row(Func):
    """A row value, `(a, b)`, which SQL compares column by column."""

    function = ""
    output_field = BigIntegerField()


def _after(position: tuple[int, int]) -> GreaterThan:
    """Rows after `position` in feed order, as a row-value comparison. The equivalent
    `Q(feed_seq__gt=s) | Q(feed_seq=s, id__gt=i)` cannot start the index scan (record_feed) at
    the position: PostgreSQL would read the feed from its start up to the cursor on every page,
    which grows with the feed. PostgreSQL and SQLite (3.15 and later) both compare row values
    and seek an index with them."""
    return GreaterThan(_Row("feed_seq", "id"), _Row(*map(Value, position)))


def _record(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "graph_id": row.graph_id,
        "job": row.job_id,
        "resource": row.resource,
        "deleted": row.deleted_at is not None,
        "first_seen_at": row.created_at,
        "last_changed_at": row.updated_at,
        "data": orjson.Fragment(row.raw),
    }


def between(
    connection_id: int, resource: str, first_seq: int, last_seq: int, max_bytes: int
) -> tuple[list[dict[str, Any]], bool]:
    """The records written with seqs `first_seq` to `last_seq` (a sync run's), as the API
    shows them, parsed, up to about `max_bytes` of documents; and whether that was all of them.
    For webhooks that carry a run's records inline."""
    rows = _changes(connection_id, resource, (first_seq - 1, _AFTER_EVERY_ID)).filter(
        feed_seq__lte=last_seq
    )
    records: list[dict[str, Any]] = []
    size = 0
    for row in rows.iterator(chunk_size=200):
        size += len(row.raw)
        if size > max_bytes:
            return records, False
        record = _record(row)
        record["data"] = orjson.loads(row.raw)
        record["first_seen_at"] = row.created_at.isoformat().replace("+00:00", "Z")
        record["last_changed_at"] = row.updated_at.isoformat().replace("+00:00", "Z")
        records.append(record)
    return records, True


#: above every record id: a position after all the rows of a seq
_AFTER_EVERY_ID = 2**63 - 1


def span(connection_id: int, resource: str, first_seq: int, last_seq: int) -> dict[str, str]:
    """Cursors around the writes that took seqs `first_seq` to `last_seq` (a sync run's): read
    from `from_cursor` and they come first; `to_cursor` is the position after them."""
    return {
        "from_cursor": _cursor(connection_id, resource, (first_seq - 1, _AFTER_EVERY_ID)),
        "to_cursor": _cursor(connection_id, resource, (last_seq, _AFTER_EVERY_ID)),
    }


def _cursor(connection_id: int, resource: str, position: tuple[int, int]) -> str:
    return signing.dumps([connection_id, resource, *position], salt=_SALT)


def _position(cursor: str, connection_id: int, resource: str) -> tuple[int, int]:
    try:
        value = signing.loads(cursor, salt=_SALT)
    except (signing.BadSignature, ValueError, TypeError):
        raise BadCursor("cursor: not a cursor Graphport issued") from None
    if not (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(n, int) for n in (value[0], value[2], value[3]))
    ):
        raise BadCursor("cursor: not a cursor Graphport issued")
    if value[0] != connection_id or value[1] != resource:
        raise BadCursor("cursor: belongs to another connection or resource")
    return value[2], value[3]
