"""Directory: the signed-in user, users and groups with delta (app-only needs admin consent)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from emulator.delta import delta_response, list_response
from emulator.errors import GraphError, directory_denied
from emulator.paging import Cursor, TokenInvalid, project
from emulator.routing import Call, Reply, Route, router
from emulator.store import Item

S = r"\{s\}"
ROUTES: list[Route] = []
r = router(ROUTES, "directory")
USERS = {
    "user.read.all",
    "user.readbasic.all",
    "user.readwrite.all",
    "directory.read.all",
    "directory.readwrite.all",
}
GROUPS = {
    "group.read.all",
    "group.readwrite.all",
    "groupmember.read.all",
    "directory.read.all",
    "directory.readwrite.all",
}


def require(call: Call, perms: set[str]) -> None:
    token = call.token
    granted = {s.lower() for s in (token.scopes if token.user_id else token.roles)}
    if not granted & perms:
        raise directory_denied()


@r("GET", S, "profile")
async def get_user(call: Call) -> Reply:
    user = call.subject
    assert user is not None
    if call.token.user_id != user.id:
        require(call, USERS)
    item = call.emu.world.users_collection(user.tenant_id).get_by_id(user.id) or user.graph()
    body = project(item, call.select())
    if call.subject_prefix != "me" or call.select():
        suffix = f"({','.join(call.select() or [])})" if call.select() else ""
        body = {"@odata.context": f"{call.base}/$metadata#users{suffix}/$entity", **body}
    return Reply(200, body)


@r("GET", "users")
async def list_users(call: Call) -> Reply:
    require(call, USERS)
    coll = call.emu.world.users_collection(call.token.tenant_id)
    return list_response(call, [coll], "users", 100, 999)


@r("GET", "users/delta")
async def users_delta(call: Call) -> Reply:
    require(call, USERS)
    coll = call.emu.world.users_collection(call.token.tenant_id)
    if call.query.get("$deltatoken") == "latest":
        call.query["token"] = "latest"
    return delta_response(call, coll, "users", 100, 999)


def group_shape(item: Item, cur: Cursor) -> Item:
    out = project(item, cur.s)
    if cur.m == "d" and "_members_delta" in item:
        out["members@delta"] = item["_members_delta"]
    else:
        out["members@delta"] = [
            {"@odata.type": "#microsoft.graph.user", "id": m} for m in item.get("_members", [])
        ]
    return out


@r("GET", "groups")
async def list_groups(call: Call) -> Reply:
    require(call, GROUPS)
    coll = call.emu.world.groups_collection(call.token.tenant_id)
    return list_response(call, [coll], "groups", 100, 999)


@r("GET", "groups/delta")
async def groups_delta(call: Call) -> Reply:
    require(call, GROUPS)
    coll = call.emu.world.groups_collection(call.token.tenant_id)
    return delta_response(call, coll, "groups", 100, 999, shape=group_shape)


@r("GET", "groups/(?P<id>[^/]+)")
async def get_group(call: Call) -> Reply:
    require(call, GROUPS)
    item = call.emu.world.groups_collection(call.token.tenant_id).get_by_id(call.match["id"])
    if item is None:
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{call.match['id']}' does not exist or one of its queried "
            "reference-property objects are not present.",
        )
    return Reply(
        200,
        {"@odata.context": f"{call.base}/$metadata#groups/$entity", **project(item, call.select())},
    )


@r("GET", "groups/(?P<id>[^/]+)/members")
async def group_members(call: Call) -> Reply:
    """Direct members, 100 a page by default (`$top` up to 999), with an opaque nextLink."""
    require(call, GROUPS)
    world = call.emu.world
    item = world.groups_collection(call.token.tenant_id).get_by_id(call.match["id"])
    if item is None:
        raise GraphError(
            404, "Request_ResourceNotFound", f"Resource '{call.match['id']}' does not exist."
        )
    size, pref = call.page_size(100, 999)
    start = 0
    if call.query.get("$skiptoken"):
        try:
            start = Cursor.decode(call.query["$skiptoken"]).p
        except TokenInvalid as exc:
            raise GraphError(400, "BadRequest", "Invalid $skiptoken.") from exc
    members = item.get("_members", [])
    users = world.users_collection(call.token.tenant_id)
    value = []
    for member in members[start : start + size]:
        found = users.get_by_id(member)
        if found is not None:
            value.append({"@odata.type": "#microsoft.graph.user", **project(found, call.select())})
    body: dict[str, Any] = {"@odata.context": f"{call.base}/$metadata#directoryObjects"}
    if start + size < len(members):
        params = {k: v for k, v in call.query.items() if k != "$skiptoken"}
        params["$skiptoken"] = Cursor(item["id"], 0, "l", 0, 0, start + size).encode()
        body["@odata.nextLink"] = f"{call.base}/{call.path}?{urlencode(params, safe='$,()')}"
    body["value"] = value
    return Reply(200, body, dict(pref))
