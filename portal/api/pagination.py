"""Cursor pagination for the API's lists: rows in id order, the cursor a signed last id.

Lists here (connections, jobs) are read for what they are now, so an id cursor is enough; the
records feed, which must never miss a change, has its own (graphsync.feed).
"""

from __future__ import annotations

from django.core import signing
from django.db.models import QuerySet

from portal.api.problems import invalid

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


def limit_of(params, default: int = DEFAULT_LIMIT) -> int:
    raw = params.get("limit")
    if raw in (None, ""):
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise invalid("limit", f"must be a whole number from 1 to {MAX_LIMIT}.") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid("limit", f"must be from 1 to {MAX_LIMIT}, not {limit}.")
    return limit


def page(queryset: QuerySet, params, name: str) -> tuple[list, str | None]:
    """One page of `queryset` after the request's cursor, and the next page's cursor (None at
    the end). `name` binds cursors to their list: one list's cursor is refused by another."""
    limit = limit_of(params)
    after = 0
    cursor = params.get("cursor")
    if cursor:
        try:
            after = int(signing.loads(cursor, salt=f"portal.api.list.{name}"))
        except (signing.BadSignature, ValueError, TypeError):
            raise invalid("cursor", f"not a cursor this {name} list issued.") from None
    rows = list(queryset.filter(pk__gt=after).order_by("pk")[: limit + 1])
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, signing.dumps(rows[-1].pk, salt=f"portal.api.list.{name}")
