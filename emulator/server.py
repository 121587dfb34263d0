"""Two aiohttp applications in one process: the login host and the Graph host, own ports each.

Keeping them on separate ports means a client that sends a Graph call to the login host (or a
token request to Graph) gets a 404, as it would against Microsoft.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from emulator import control_api, graph, identity
from emulator.runtime import Emulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def log_login_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if not request.path.startswith("/_emulator/"):
            emu: Emulator = request.app["emu"]
            entry: dict[str, Any] = {
                "time": time.time(),
                "host": "login",
                "method": request.method,
                "path": request.path,
                "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 3),
            }
            entry.update(request.get("log", {}))
            emu.world.log(entry)


def login_app(emu: Emulator) -> web.Application:
    app = web.Application(middlewares=[log_login_requests, control_api.control_errors])
    app["emu"] = emu
    identity.add_routes(app)
    control_api.add_routes(app)
    return app


def graph_app(emu: Emulator) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app["emu"] = emu
    graph.add_routes(app)
    return app


async def start(
    emu: Emulator, host: str, login_port: int, graph_port: int
) -> tuple[list[web.AppRunner], str, str]:
    runners = []
    urls = []
    for app, port in ((login_app(emu), login_port), (graph_app(emu), graph_port)):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        sockets = runner.addresses
        bound = sockets[0][1] if sockets else port
        urls.append(f"http://{host}:{bound}")
        runners.append(runner)
    emu.set_bases(urls[0], urls[1])
    return runners, urls[0], urls[1]
