"""The Graph host: bearer-token check, routing, permissions, throttling, JSON out.

`dispatch` serves one Graph call whatever its transport, so `$batch` items go through exactly
the same checks, throttles and counters as top-level requests (`batch` is handed `dispatch`).
The route modules (`graph_outlook`, `graph_drive`, `graph_directory`, `graph_subscriptions`)
fill their tables with `routing`'s decorator; this module collects them.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from emulator import graph_directory, graph_drive, graph_outlook, graph_subscriptions
from emulator.batch import run_batch
from emulator.errors import GraphError, not_found, token_expired
from emulator.routing import Call, Handler, Reply
from emulator.runtime import Emulator
from emulator.tokens import AccessToken

QUOTED_KEY = re.compile(r"\('([^']*)'\)")
EMPTY_CALL = re.compile(r"(?i)delta\(\)(?=/|$)")
DRIVE_TOKEN = re.compile(r"delta\(token='?([^')]*)'?\)", re.IGNORECASE)


def subject_of(call: Call) -> None:
    """Resolve `me` / `users/{id|upn}` at the start of the path."""
    parts = call.route_path.split("/", 2)
    if parts[0].lower() == "me":
        if call.token.user_id is None:
            raise GraphError(
                400, "BadRequest", "/me request is only valid with delegated authentication flow."
            )
        call.subject = call.emu.world.directory.find_user(call.token.user_id)
        call.subject_prefix = "me"
        call.route_path = "/".join(["{s}", *parts[1:]])
    elif parts[0].lower() == "users" and len(parts) > 1 and parts[1].lower() != "delta":
        ref = parts[1]
        call.subject = call.emu.world.directory.find_user(ref)
        if call.subject is None or call.subject.tenant_id != call.token.tenant_id:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{ref}' does not exist or one of its queried reference-"
                "property objects are not present.",
            )
        call.subject_prefix = f"users/{ref}"
        call.route_path = "/".join(["{s}", *parts[2:]])


ROUTES: list[tuple[str, re.Pattern[str], Handler, str]] = []


def route(method: str, pattern: str, family: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ROUTES.append((method, re.compile(f"^{pattern}$", re.IGNORECASE), handler, family))
        return handler

    return register


def register_all() -> None:
    if ROUTES:
        return
    for module in (graph_outlook, graph_drive, graph_directory, graph_subscriptions):
        for method, pattern, handler, family in module.ROUTES:
            route(method, pattern, family)(handler)


def authenticate(emu: Emulator, authorization: str | None) -> AccessToken:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise GraphError(
            401,
            "InvalidAuthenticationToken",
            "Access token is empty.",
            {"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'},
        )
    token = emu.tokens.lookup(authorization[7:].strip())
    if token is None:
        raise GraphError(
            401,
            "InvalidAuthenticationToken",
            "IDX14100: JWT is not well formed, there are no dots (.).",
            {"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'},
        )
    if time.time() >= token.expires_at:
        raise token_expired()
    return token


def directory_cost(call: Call, family: str) -> int:
    """Identity resource units: users 2, group members 3, others 1; `$select` and a `$top`
    under 20 save one each; never below 1."""
    lowered = call.route_path.lower()
    cost = 2 if lowered.startswith("users") or family == "profile" else 1
    if lowered.endswith("/members"):
        cost = 3
    if "$select" in call.query:
        cost -= 1
    top = call.query.get("$top", "")
    if top.isdigit() and int(top) < 20:
        cost -= 1
    return max(1, cost)


def drive_cost(call: Call) -> int:
    """OneDrive resource units: one item or a delta with a token 1, a listing or a delta
    without a token 2."""
    lowered = call.route_path.lower()
    if lowered.endswith("/delta"):
        token = call.drive_token or call.query.get("token")
        return 1 if token and token != "latest" else 2
    return 2 if lowered.endswith("/children") else 1


def admit(call: Call, family: str) -> Any:
    """Throttling for the family of resource being read; returns the lease to release."""
    throttle = call.emu.throttle
    client = call.token.client_id
    tenant = call.token.tenant_id
    throttle.charge_app(client)
    if family == "outlook" and call.subject is not None:
        return throttle.enter(client, call.subject.id)
    lease = throttle.enter(client, None)
    if family in ("directory", "profile"):
        cost = directory_cost(call, family)
        lease.headers.update(throttle.charge_directory(client, tenant, cost))
    elif family == "drive":
        lease.headers.update(throttle.charge_drive(client, tenant, drive_cost(call)))
    elif family == "subscriptions" and call.method != "GET":
        throttle.charge_subscription_write(client, tenant)
    return lease


async def dispatch(
    emu: Emulator,
    method: str,
    version: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    body: Any,
    token: AccessToken,
    in_batch: bool = False,
) -> Reply:
    request_id = str(uuid.uuid4())
    started = time.perf_counter()
    entry: dict[str, Any] = {
        "time": time.time(),
        "host": "graph",
        "method": method,
        "path": f"/{version}/{path}",
        "client_id": token.client_id,
        "user_id": token.user_id,
        "batch_item": in_batch,
    }
    reply = await _dispatch(
        emu, method, version, path, query, headers, body, token, request_id, in_batch, entry
    )
    reply.headers.setdefault("request-id", request_id)
    reply.headers.setdefault("client-request-id", headers.get("client-request-id", request_id))
    entry["status"] = reply.status
    entry["ms"] = round((time.perf_counter() - started) * 1000, 3)
    emu.world.log(entry)
    return reply


async def _dispatch(
    emu: Emulator,
    method: str,
    version: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    body: Any,
    token: AccessToken,
    request_id: str,
    in_batch: bool,
    entry: dict[str, Any],
) -> Reply:
    path = path.strip("/")
    drive_token = None
    found = DRIVE_TOKEN.search(path)
    if found:
        drive_token = found.group(1)
        path = path[: found.start()] + "delta" + path[found.end() :]
    # `delta()`: the OData function-call form the Kiota SDKs (msgraph-sdk) send; Graph treats
    # it as `delta`.
    path = EMPTY_CALL.sub("delta", path)
    odd = next((k for k in query if k.startswith("(token")), None)
    if odd is not None:  # the docs' `delta?(token='...')` form
        drive_token = DRIVE_TOKEN.search("delta" + odd + "=" + query[odd] + ")")
        drive_token = drive_token.group(1) if drive_token else None
    route_path = QUOTED_KEY.sub(r"/\1", path)
    call = Call(
        emu,
        method,
        version,
        path,
        route_path,
        query,
        headers,
        body,
        token,
        request_id,
        drive_token=drive_token,
        in_batch=in_batch,
    )
    lease = None
    try:
        subject_of(call)
        if call.subject is not None:
            entry["mailbox"] = call.subject.id
        handler, family = resolve(call)
        lease = admit(call, family)
        delay = emu.world.settings.graph_latency_ms + lease.latency_ms
        if delay:
            await asyncio.sleep(delay / 1000)
        reply = await handler(call)
        reply.headers.update(lease.headers)
        return reply
    except GraphError as err:
        entry["error"] = err.code
        return Reply(
            err.status,
            err.body(request_id, headers.get("client-request-id")),
            {"Content-Type": "application/json", **err.headers},
        )
    finally:
        if lease is not None:
            lease.release()


def resolve(call: Call) -> tuple[Handler, str]:
    register_all()
    allowed = False
    for method, pattern, handler, family in ROUTES:
        match = pattern.match(call.route_path)
        if match is None:
            continue
        allowed = True
        if method == call.method:
            call.match = {k: v for k, v in match.groupdict().items() if v is not None}
            return handler, family
    if allowed:
        raise GraphError(
            405,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        )
    raise GraphError(
        400,
        "BadRequest",
        f"Resource not found for the segment '{call.path.split('/')[0] or call.path}'.",
    )


def json_reply(reply: Reply) -> web.Response:
    if reply.body is None:
        return web.Response(status=reply.status, headers=reply.headers)
    headers = {k: v for k, v in reply.headers.items() if k.lower() != "content-type"}
    return web.Response(
        body=orjson.dumps(reply.body),
        status=reply.status,
        headers=headers,
        content_type="application/json",
    )


async def handle(request: web.Request) -> web.Response:
    emu: Emulator = request.app["emu"]
    version = request.match_info["version"]
    path = request.match_info["path"]
    headers = {k.lower(): v for k, v in request.headers.items()}
    request_id = str(uuid.uuid4())
    try:
        token = authenticate(emu, request.headers.get("Authorization"))
    except GraphError as err:
        emu.world.log(
            {
                "time": time.time(),
                "host": "graph",
                "method": request.method,
                "path": request.path,
                "status": err.status,
                "error": err.code,
            }
        )
        return json_reply(
            Reply(err.status, err.body(request_id, headers.get("client-request-id")), err.headers)
        )
    body = None
    if request.can_read_body:
        raw = await request.read()
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return json_reply(
                    Reply(
                        400,
                        GraphError(400, "BadRequest", "Invalid JSON body.").body(request_id, None),
                    )
                )
    if path == "$batch" and request.method == "POST":
        reply = await run_batch(emu, version, body, headers, token, dispatch=dispatch)
    else:
        reply = await dispatch(
            emu, request.method, version, path, dict(request.query), headers, body, token
        )
    return json_reply(reply)


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", r"/{version:v1\.0|beta}/{path:.*}", handle)


__all__ = ["Call", "Reply", "add_routes", "dispatch", "not_found"]
