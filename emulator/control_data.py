"""Control API for data: add, change and delete items, users and groups; invalidate deltas."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from emulator import groups, population
from emulator.paging import Cursor, TokenInvalid
from emulator.runtime import Emulator
from emulator.store import Collection
from emulator.world import Mailbox

KINDS = ("messages", "events", "contacts", "drive-items")


def ok(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def body_of(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    return orjson.loads(raw) if raw else {}


def mailbox(request: web.Request) -> tuple[Emulator, Mailbox]:
    emu: Emulator = request.app["emu"]
    user = emu.world.directory.find_user(request.match_info["user"])
    if user is None:
        raise KeyError(request.match_info["user"])
    return emu, emu.world.mailbox(user)


def collections_of(box: Mailbox, kind: str, folder: str | None) -> list[Collection]:
    if kind == "messages":
        if folder:
            return [box.folders[folder.lower()]]
        return list(box.folders.values())
    if kind == "contacts" and folder:  # a contact folder by id or display name
        by_name = {name: fid for fid, name in box.contact_folder_names.items()}
        return [box.contact_folders[by_name.get(folder, folder)]]
    found = {"events": box.events, "contacts": box.contacts, "drive-items": box.drive}.get(kind)
    if found is None:
        raise KeyError(kind)
    return [found]


async def list_items(request: web.Request) -> web.Response:
    _, box = mailbox(request)
    colls = collections_of(box, request.match_info["kind"], request.query.get("folder"))
    limit = int(request.query.get("limit", "100"))
    ids: list[str] = []
    for coll in colls:
        for item_id in coll.ids():
            if len(ids) >= limit:
                break
            ids.append(item_id)
    return ok({"ids": ids, "count": sum(c.live_count() for c in colls)})


async def add_items(request: web.Request) -> web.Response:
    _, box = mailbox(request)
    body = await body_of(request)
    kind = request.match_info["kind"]
    coll = collections_of(
        box, kind, body.get("folder") or ("inbox" if kind == "messages" else None)
    )[0]
    fields_list = body.get("items") or [{} for _ in range(int(body.get("count", 1)))]
    if kind == "drive-items":
        root = coll.id_of(0)
        for fields in fields_list:
            fields.setdefault(
                "parentReference", {"driveId": box.drive_id, "driveType": "business", "id": root}
            )
    items = [coll.add(fields) for fields in fields_list]
    return ok({"ids": [i["id"] for i in items], "items": items}, 201)


def find(box: Mailbox, kind: str, item_id: str) -> Collection:
    every = list(box.contact_folders.values()) if kind == "contacts" else None
    for coll in every or collections_of(box, kind, None):
        if coll.get_by_id(item_id) is not None:
            return coll
    raise KeyError(item_id)


async def update_item(request: web.Request) -> web.Response:
    _, box = mailbox(request)
    item_id = request.match_info["id"]
    coll = find(box, request.match_info["kind"], item_id)
    return ok(coll.update(item_id, await body_of(request)))


async def delete_item(request: web.Request) -> web.Response:
    _, box = mailbox(request)
    item_id = request.match_info["id"]
    find(box, request.match_info["kind"], item_id).delete(item_id)
    return ok({"ok": True})


async def add_contact_folder(request: web.Request) -> web.Response:
    """A subfolder of the default Contacts folder, with `count` generated contacts."""
    emu, box = mailbox(request)
    body = await body_of(request)
    folder_id = emu.world.add_contact_folder(
        box, str(body.get("display_name") or "Folder"), int(body.get("count", 0))
    )
    return ok({"id": folder_id, "default_folder_id": box.contacts_folder_id}, 201)


USER_FIELDS = (
    "display_name",
    "job_title",
    "office_location",
    "mobile_phone",
    "given_name",
    "surname",
    "department",
    "mailbox",
    "mailbox_inactive",
    "account_enabled",
    "admin",
)


async def update_user(request: web.Request) -> web.Response:
    """`mailbox: false`: no Exchange Online mailbox (no `mail`); `mailbox_inactive: true`: an
    inactive or soft-deleted one (`mail` stays, items kept); both make Outlook calls answer 404
    MailboxNotEnabledForRESTAPI. `account_enabled: false` disables the account."""
    emu: Emulator = request.app["emu"]
    user = emu.world.directory.find_user(request.match_info["user"])
    if user is None:
        raise KeyError(request.match_info["user"])
    body = await body_of(request)
    unknown = set(body) - set(USER_FIELDS)
    if unknown:
        raise ValueError(f"unknown user fields: {sorted(unknown)}")
    for key, value in body.items():
        setattr(user, "is_admin" if key == "admin" else key, value)
    item = emu.world.users_collection(user.tenant_id).update(user.id, user.graph())
    return ok({k: v for k, v in (item or {}).items() if k[0] != "_"} | user.graph()["_extra"])


async def delete_user(request: web.Request) -> web.Response:
    emu: Emulator = request.app["emu"]
    user = emu.world.directory.find_user(request.match_info["user"])
    if user is None:
        raise KeyError(request.match_info["user"])
    emu.world.directory.remove_user(user)
    emu.world.users_collection(user.tenant_id).delete(user.id)
    emu.tokens.revoke_user(user.tenant_id, user.id, None, access_too=True)
    return ok({"ok": True})


async def add_group(request: web.Request) -> web.Response:
    emu: Emulator = request.app["emu"]
    tenant = emu.world.directory.find_tenant(request.match_info["tenant"])
    if tenant is None:
        raise KeyError(request.match_info["tenant"])
    item = groups.add_group(emu.world, tenant.id, await body_of(request))
    return ok({"id": item["id"]}, 201)


async def add_population(request: web.Request) -> web.Response:
    """Generated users with mailboxes, in department groups (`population.populate`)."""
    emu: Emulator = request.app["emu"]
    tenant = emu.world.directory.find_tenant(request.match_info["tenant"])
    if tenant is None:
        raise KeyError(request.match_info["tenant"])
    return ok(population.populate(emu.world, tenant.id, await body_of(request)), 201)


def group_collection(emu: Emulator, group_id: str) -> Collection:
    for coll in emu.world.tenant_groups.values():
        if coll.get_by_id(group_id) is not None:
            return coll
    raise KeyError(group_id)


async def update_group(request: web.Request) -> web.Response:
    emu: Emulator = request.app["emu"]
    group_id = request.match_info["group"]
    coll = group_collection(emu, group_id)
    body = await body_of(request)
    fields: dict[str, Any] = {}
    for key, graph_key in (("display_name", "displayName"), ("description", "description")):
        if key in body:
            fields[graph_key] = body[key]
    if "members" in body:
        found = (emu.world.directory.find_user(m) for m in body["members"])
        item = groups.set_members(coll, group_id, [u.id for u in found if u], **fields)
    else:
        item = coll.update(group_id, {**fields, "_members_delta": []}) or {}
    return ok({k: v for k, v in item.items() if not k.startswith("_")})


async def delete_group(request: web.Request) -> web.Response:
    emu: Emulator = request.app["emu"]
    group_id = request.match_info["group"]
    group_collection(emu, group_id).delete(group_id)
    return ok({"ok": True})


def token_of(value: str) -> str:
    for marker in ("$deltatoken=", "$skiptoken=", "token="):
        if marker in value:
            value = value.split(marker, 1)[1]
            break
    return value.split("&")[0].rstrip(")'").lstrip("'")


async def invalidate_delta(request: web.Request) -> web.Response:
    """One token (or deltaLink), every token of a user's resource, a tenant's, or all of them."""
    emu: Emulator = request.app["emu"]
    body = await body_of(request)
    world = emu.world
    bumped = 0
    if body.get("token") or body.get("link"):
        raw = token_of(body.get("token") or body["link"])
        world.invalid_delta_tokens.add(raw)
        try:
            key = Cursor.decode(raw).c
            return ok({"invalidated": [key]})
        except TokenInvalid:
            return ok({"invalidated": []})
    keys: list[str] = []
    for coll in world.store.collections.values():
        if body.get("all"):
            match = True
        elif body.get("user"):
            user = world.directory.find_user(body["user"])
            resource = body.get("resource", "")
            names = {
                "messages": ":mail:",
                "events": ":events",
                "contacts": ":contacts",
                "drive": ":drive",
            }
            match = (
                bool(user)
                and coll.key.startswith(f"u:{user.id}:")
                and names.get(resource, "") in coll.key
            )  # type: ignore[union-attr]
        else:
            tenant = world.directory.find_tenant(body.get("tenant", ""))
            match = bool(tenant) and coll.key in (f"t:{tenant.id}:{body.get('resource', '')}",)  # type: ignore[union-attr]
        if match:
            coll.epoch += 1
            bumped += 1
            keys.append(coll.key)
    return ok({"invalidated": keys})


Handler = Callable[[web.Request], Awaitable[web.Response]]
DATA_ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/users/{user}/contact-folders", add_contact_folder),
    ("GET", "/users/{user}/{kind}", list_items),
    ("POST", "/users/{user}/{kind}", add_items),
    ("PATCH", "/users/{user}/{kind}/{id}", update_item),
    ("DELETE", "/users/{user}/{kind}/{id}", delete_item),
    ("PATCH", "/users/{user}", update_user),
    ("DELETE", "/users/{user}", delete_user),
    ("POST", "/tenants/{tenant}/groups", add_group),
    ("POST", "/tenants/{tenant}/population", add_population),
    ("PATCH", "/groups/{group}", update_group),
    ("DELETE", "/groups/{group}", delete_group),
    ("POST", "/delta/invalidate", invalidate_delta),
]
