"""Delta and list responses for Graph: links, `$select`, page sizes, 410 on lost sync state."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from emulator.errors import GraphError
from emulator.paging import Cursor, Keep, TokenInvalid, check, delta_page, list_page, project
from emulator.routing import Call, Reply
from emulator.store import Collection, Item


def explicit_size(call: Call) -> bool:
    return "$top" in call.query or "maxpagesize" in call.headers.get("prefer", "")


def gone(call: Call, coll: Collection, cur: Cursor | None, drive: bool) -> GraphError:
    """410 with a fresh initial URL, as Microsoft answers a lost or expired sync state."""
    path = re.sub(r"/delta$", "/delta", call.path)
    if drive:
        path = f"{call.subject_prefix}/drive/root/delta"
        return GraphError(
            410,
            "resyncRequired",
            "Resync required. Replace any local items with the server's version (including "
            "deletes) if you're sure that the service was up to date with your local changes "
            "when you last sync'd. Upload any local changes that the server doesn't know about.",
            {"Location": f"{call.base}/{path}"},
            {"code": "resyncChangesApplyDifferences"},
        )
    params: dict[str, str] = {}
    if cur is not None and cur.s:
        params["$select"] = ",".join(cur.s)
    if cur is not None and cur.r:
        params["startDateTime"], params["endDateTime"] = cur.r
    location = f"{call.base}/{path}" + (f"?{urlencode(params)}" if params else "")
    return GraphError(
        410,
        "SyncStateNotFound",
        "The sync state is not found or has expired. "
        "Restart synchronization without a delta token.",
        {"Location": location},
    )


def delta_response(
    call: Call,
    coll: Collection,
    context: str,
    default: int,
    maximum: int,
    keep: Keep = None,
    window: list[str] | None = None,
    drive: bool = False,
    shape: Callable[[Item, Cursor], Item] | None = None,
    keep_for: Callable[[Cursor], Keep] | None = None,
) -> Reply:

    world = call.emu.world
    q = call.query
    raw = (
        (call.drive_token or q.get("token"))
        if drive
        else (q.get("$skiptoken") or q.get("$deltatoken"))
    )
    size, pref = call.page_size(default, maximum)
    cur: Cursor | None = None
    if raw == "latest":
        cur = Cursor(
            coll.key,
            coll.epoch,
            "D",
            0,
            world.store.seq,
            0,
            size if explicit_size(call) else None,
            call.select(),
            window,
        )
        return _reply(call, [], None, cur, context, drive, pref)
    if raw:
        try:
            cur = Cursor.decode(raw)
            check(coll, cur, raw, world.invalid_delta_tokens)
        except TokenInvalid as exc:
            raise gone(call, coll, cur, drive) from exc
        if cur.m == "D":
            cur = Cursor(coll.key, coll.epoch, "d", cur.t, world.store.seq, 0, cur.n, cur.s, cur.r)
        if not explicit_size(call):
            size = cur.n or default
    else:
        cur = Cursor(
            coll.key,
            coll.epoch,
            "i",
            0,
            world.store.seq,
            0,
            size if explicit_size(call) else None,
            call.select(),
            window,
        )
    if keep_for is not None:
        keep = keep_for(cur)
    page = delta_page(coll, cur, size, keep, shape, drive)
    return _reply(call, page.items, page.next_cursor, page.delta_cursor, context, drive, pref)


def _reply(
    call: Call,
    items: list[Item],
    next_cur: Cursor | None,
    delta_cur: Cursor | None,
    context: str,
    drive: bool,
    pref: dict[str, str],
) -> Reply:
    path = re.sub(r"/delta$", "/delta", call.path)
    body: dict[str, Any] = {"@odata.context": f"{call.base}/$metadata#{context}"}
    if drive:
        owner = call.subject_prefix
        if next_cur is not None:
            body["@odata.nextLink"] = f"{call.base}/{owner}/drive/delta(token={next_cur.encode()})"
        elif delta_cur is not None:
            body["@odata.deltaLink"] = (
                f"{call.base}/{owner}/drive/root/delta?token={delta_cur.encode()}"
            )
    elif next_cur is not None:
        body["@odata.nextLink"] = f"{call.base}/{path}?$skiptoken={next_cur.encode()}"
    elif delta_cur is not None:
        body["@odata.deltaLink"] = f"{call.base}/{path}?$deltatoken={delta_cur.encode()}"
    body["value"] = items
    return Reply(200, body, dict(pref))


def list_response(
    call: Call,
    colls: list[Collection],
    context: str,
    default: int,
    maximum: int,
    keep: Keep = None,
    odata_type: str | None = None,
) -> Reply:
    """A plain collection GET with `$top`, `$select` and an opaque `$skiptoken` nextLink."""
    size, pref = call.page_size(default, maximum)
    start = (0, 0)
    select = call.select()
    raw = call.query.get("$skiptoken")
    if raw:
        try:
            cur = Cursor.decode(raw)
        except TokenInvalid as exc:
            raise GraphError(400, "BadRequest", "Invalid $skiptoken.") from exc
        start = (cur.f, cur.p)
    items, nxt = list_page(colls, start, size, keep)
    suffix = f"({','.join(select)})" if select else ""
    body: dict[str, Any] = {
        "@odata.context": f"{call.base}/$metadata#{context}{suffix}",
        "value": [project(i, select, odata_type) for i in items],
    }
    if nxt is not None:
        params = {k: v for k, v in call.query.items() if k != "$skiptoken"}
        params["$skiptoken"] = Cursor(colls[0].key, 0, "l", nxt[0], 0, nxt[1]).encode()
        body["@odata.nextLink"] = f"{call.base}/{call.path}?{urlencode(params, safe='$,()')}"
    return Reply(200, body, dict(pref))
