"""Opaque paging and delta tokens over a Collection, and the pages they produce.

A token is base64url JSON naming the collection, its epoch (bumped to invalidate every token of
it), the mode (`i` initial pass, `d` changes), the sequence bounds and the position reached, plus
the query options of the first request, which Microsoft carries in its tokens too.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from emulator.store import Collection, Item

Keep = Callable[[Item], bool] | None


class TokenInvalid(Exception):
    pass


@dataclass
class Cursor:
    c: str  # collection key
    e: int  # collection epoch
    m: str = "i"  # i: initial pass; d: changes in (f, t]; D: a delta token (next round after t)
    f: int = 0
    t: int = 0
    p: int = 0
    n: int | None = None
    s: list[str] | None = None
    r: list[str] | None = None  # calendarView window
    x: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        raw = {k: v for k, v in self.__dict__.items() if v not in (None, {}, 0) or k in "ce"}
        return base64.urlsafe_b64encode(orjson.dumps(raw)).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            return cls(**raw)
        except (ValueError, TypeError) as exc:
            raise TokenInvalid(token) from exc


def project(item: Item, select: list[str] | None, odata_type: str | None = None) -> Item:
    """Apply `$select` the way Graph does: id and etag always come along, and properties
    outside the default set (an item's `_extra`, e.g. a user's `accountEnabled`) come only
    when named."""
    if select is None:
        if odata_type is None and "_members" not in item and "_extra" not in item:
            return item  # the hot path of big pages: no copy (callers never mutate it)
        out = {k: v for k, v in item.items() if k[0] != "_"}
    else:
        extra = item.get("_extra") or {}
        out = {}
        for k in select:
            if k in item and k[0] != "_":
                out[k] = item[k]
            elif k in extra:
                out[k] = extra[k]
        for always in ("@odata.etag", "eTag", "id"):
            if always in item and always not in out:
                out[always] = item[always]
    if odata_type:
        return {"@odata.type": odata_type, **out}
    return out


def removed(coll: Collection, pos: int, item_id: str, drive: bool) -> Item:
    if drive:
        # OneDrive has no @removed: a deleted item keeps its facets and gains `deleted`.
        last = coll.tombstone(pos) or {"id": item_id}
        out: Item = {"id": item_id, "deleted": {"state": "deleted"}}
        for key in ("name", "parentReference", "folder", "file"):
            if key in last:
                out[key] = last[key]
        return out
    return {"@odata.type": coll.kind.odata_type, "id": item_id, "@removed": {"reason": "deleted"}}


@dataclass
class Page:
    items: list[Item]
    next_cursor: Cursor | None
    delta_cursor: Cursor | None


def delta_page(
    coll: Collection,
    cur: Cursor,
    size: int,
    keep: Keep = None,
    shape: Callable[[Item, Cursor], Item] | None = None,
    drive: bool = False,
) -> Page:
    """One page of a delta round; the last page carries the cursor of the next round."""
    odata_type = None if drive or coll.key.startswith("t:") else coll.kind.odata_type
    out: list[Item] = []
    if cur.m == "i":
        items, next_pos = coll.scan(cur.p, size, keep)
        for item in items:
            out.append(shape(item, cur) if shape else project(item, cur.s, odata_type))
        if next_pos is not None:
            return Page(out, Cursor(**{**cur.__dict__, "p": next_pos}), None)
        return Page(out, None, Cursor(cur.c, cur.e, "D", 0, cur.t, 0, cur.n, cur.s, cur.r))
    changed = coll.changed_between(cur.f, cur.t)
    chunk = changed[cur.p : cur.p + size]
    for pos in chunk:
        item = coll.get(pos)
        if item is None:
            out.append(removed(coll, pos, coll.id_of(pos), drive))
        elif keep is None or keep(item):
            out.append(shape(item, cur) if shape else project(item, cur.s, odata_type))
    if cur.p + size < len(changed):
        return Page(out, Cursor(**{**cur.__dict__, "p": cur.p + size}), None)
    return Page(out, None, Cursor(cur.c, cur.e, "D", 0, cur.t, 0, cur.n, cur.s, cur.r))


def round_from_delta_token(coll: Collection, token: Cursor, now_seq: int) -> Cursor:
    """A delta token starts a new round: changes after its sequence, up to now."""
    return Cursor(coll.key, coll.epoch, "d", token.t, now_seq, 0, token.n, token.s, token.r)


def check(coll: Collection, cur: Cursor, raw: str, invalid: set[str]) -> None:
    if cur.c != coll.key or cur.e != coll.epoch or raw in invalid:
        raise TokenInvalid(raw)


def list_page(
    colls: list[Collection], start: tuple[int, int], size: int, keep: Keep = None
) -> tuple[list[Item], tuple[int, int] | None]:
    """A plain (non-delta) listing over one or more collections, continuing at (index, pos)."""
    index, pos = start
    out: list[Item] = []
    while index < len(colls) and len(out) < size:
        items, next_pos = colls[index].scan(pos, size - len(out), keep)
        out.extend(items)
        if next_pos is None:
            index, pos = index + 1, 0
        else:
            pos = next_pos
    return out, ((index, pos) if index < len(colls) else None)
