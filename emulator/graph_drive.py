"""OneDrive: the user's drive, its items, children and the root delta (`deleted` facet)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emulator.delta import delta_response, list_response
from emulator.errors import GraphError
from emulator.paging import project
from emulator.routing import Call, Reply, Route, router
from emulator.store import Collection

S = r"\{s\}"
ROUTES: list[Route] = []
r = router(ROUTES, "drive")
FILES = {
    "files.read",
    "files.readwrite",
    "files.read.all",
    "files.readwrite.all",
    "sites.read.all",
    "sites.readwrite.all",
}


def drive(call: Call) -> Collection:
    user = call.subject
    token = call.token
    assert user is not None
    granted = {s.lower() for s in (token.scopes if token.user_id else token.roles)}
    if (token.user_id is not None and token.user_id != user.id) or not granted & FILES:
        raise GraphError(403, "accessDenied", "Access denied")
    box = call.emu.world.mailbox(user)
    assert box.drive is not None
    return box.drive


def item_missing() -> GraphError:
    return GraphError(404, "itemNotFound", "The resource could not be found.")


@r("GET", f"{S}/drive")
async def get_drive(call: Call) -> Reply:
    coll = drive(call)
    assert call.subject is not None
    user = call.subject
    box = call.emu.world.mailbox(user)
    return Reply(
        200,
        {
            "@odata.context": f"{call.base}/$metadata#drives/$entity",
            "id": box.drive_id,
            "driveType": "business",
            "name": "OneDrive",
            "owner": {"user": {"id": user.id, "displayName": user.display_name}},
            "quota": {"used": 0, "total": 1099511627776, "state": "normal"},
            "webUrl": coll.get(0)["webUrl"],  # type: ignore[index]
        },
    )


@r("GET", f"{S}/drive/root")
async def get_root(call: Call) -> Reply:
    coll = drive(call)
    item = coll.get(0)
    assert item is not None
    drive_id = item["parentReference"]["driveId"]
    return Reply(
        200,
        {
            "@odata.context": f"{call.base}/$metadata#drives('{drive_id}')/root/$entity",
            **project(item, call.select()),
        },
    )


@r("GET", f"{S}/drive/items/(?P<id>[^/]+)")
async def get_item(call: Call) -> Reply:
    item = drive(call).get_by_id(call.match["id"])
    if item is None:
        raise item_missing()
    return Reply(200, project(item, call.select()))


def children_of(coll: Collection, parent_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda item: (
        item.get("parentReference", {}).get("id") == parent_id and "root" not in item
    )


@r("GET", f"{S}/drive/root/children")
async def root_children(call: Call) -> Reply:
    coll = drive(call)
    return list_response(
        call, [coll], "Collection(driveItem)", 200, 1000, keep=children_of(coll, coll.id_of(0))
    )


@r("GET", f"{S}/drive/items/(?P<id>[^/]+)/children")
async def item_children(call: Call) -> Reply:
    coll = drive(call)
    if coll.get_by_id(call.match["id"]) is None:
        raise item_missing()
    return list_response(
        call, [coll], "Collection(driveItem)", 200, 1000, keep=children_of(coll, call.match["id"])
    )


@r("GET", f"{S}/drive/(?:root/)?delta")
async def root_delta(call: Call) -> Reply:
    return delta_response(call, drive(call), "Collection(driveItem)", 200, 1000, drive=True)
