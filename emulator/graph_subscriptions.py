"""`/subscriptions`: create (with the validation handshake), list, renew, reauthorize, delete."""

from __future__ import annotations

from emulator.errors import bad_request
from emulator.routing import Call, Reply, Route, router

ROUTES: list[Route] = []
r = router(ROUTES, "subscriptions")


@r("POST", "subscriptions")
async def create(call: Call) -> Reply:
    if not isinstance(call.body, dict):
        raise bad_request("A subscription body is required.", "InvalidRequest")
    sub = await call.emu.subscriptions.create(call.token, call.body)
    return Reply(201, sub.public(call.emu.graph_base))


@r("GET", "subscriptions")
async def list_all(call: Call) -> Reply:
    subs = call.emu.subscriptions
    value = [
        s.public(call.emu.graph_base)
        for s in subs.items.values()
        if s.client_id == call.token.client_id
    ]
    for item in value:
        item.pop("@odata.context", None)
    return Reply(200, {"@odata.context": f"{call.base}/$metadata#subscriptions", "value": value})


@r("GET", "subscriptions/(?P<id>[^/]+)")
async def get_one(call: Call) -> Reply:
    sub = call.emu.subscriptions.owned(call.token, call.match["id"])
    return Reply(200, sub.public(call.emu.graph_base))


@r("PATCH", "subscriptions/(?P<id>[^/]+)")
async def renew(call: Call) -> Reply:
    sub = call.emu.subscriptions.renew(call.token, call.match["id"], call.body or {})
    return Reply(200, sub.public(call.emu.graph_base))


@r("POST", "subscriptions/(?P<id>[^/]+)/reauthorize")
async def reauthorize(call: Call) -> Reply:
    sub = call.emu.subscriptions.owned(call.token, call.match["id"])
    sub.needs_reauthorization = False
    return Reply(204)


@r("DELETE", "subscriptions/(?P<id>[^/]+)")
async def delete(call: Call) -> Reply:
    subs = call.emu.subscriptions
    sub = subs.owned(call.token, call.match["id"])
    del subs.items[sub.id]
    return Reply(204)
