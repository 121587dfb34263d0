"""What the Graph route modules share: one call in (`Call`), one reply out (`Reply`), and the
decorator that adds a handler to a module's route table.

The bottom of the Graph host: it imports none of the route modules, `graph`, `delta` or `batch`.
`graph` collects the route modules' tables and dispatches; `batch` is handed the dispatcher.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from emulator.errors import GraphError

if TYPE_CHECKING:
    from emulator.directory import User
    from emulator.runtime import Emulator
    from emulator.tokens import AccessToken


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def reply(status: int = 200, body: Any = None) -> Reply:
    return Reply(status, body)


@dataclass
class Call:
    emu: Emulator
    method: str
    version: str
    path: str  # as requested, without the version, no leading slash
    route_path: str  # ('key') turned into /key, subject replaced by {s}
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any
    token: AccessToken
    request_id: str
    match: dict[str, str] = field(default_factory=dict)
    subject: User | None = None
    subject_prefix: str = ""  # "me" or "users/{ref}" as the client wrote it
    drive_token: str | None = None
    in_batch: bool = False

    @property
    def base(self) -> str:
        return f"{self.emu.graph_base}/{self.version}"

    def select(self) -> list[str] | None:
        raw = self.query.get("$select")
        return [s.strip() for s in raw.split(",") if s.strip()] if raw else None

    def page_size(self, default: int, maximum: int) -> tuple[int, dict[str, str]]:
        """`$top` wins; otherwise `Prefer: odata.maxpagesize=N` (echoed as Preference-Applied)."""
        top = self.query.get("$top")
        if top is not None:
            try:
                value = int(top)
            except ValueError as exc:
                raise GraphError(400, "BadRequest", f"Invalid $top value '{top}'.") from exc
            if value < 1:
                raise GraphError(400, "BadRequest", f"Invalid $top value '{top}'.")
            return min(value, maximum), {}
        match = re.search(r"odata\.maxpagesize=(\d+)", self.headers.get("prefer", ""))
        if match:
            value = max(1, min(int(match.group(1)), maximum))
            return value, {"Preference-Applied": f"odata.maxpagesize={value}"}
        return default, {}


Handler = Callable[[Call], Awaitable[Reply]]
# (method, path pattern, handler, family): the family picks the throttling rules in `graph`.
Route = tuple[str, str, Handler, str]
RouteDecorator = Callable[[Handler], Handler]


def router(routes: list[Route], family: str) -> Callable[..., RouteDecorator]:
    """`r = router(ROUTES, "drive")`, then `@r("GET", pattern)` (or `@r(method, pattern, family)`)
    appends the handler to `routes`, in definition order."""

    def r(method: str, pattern: str, family: str = family) -> RouteDecorator:
        def register(handler: Handler) -> Handler:
            routes.append((method, pattern, handler, family))
            return handler

        return register

    return r


class Dispatch(Protocol):
    """`graph.dispatch`: serves one Graph call; `batch` gets it passed in."""

    def __call__(
        self,
        emu: Emulator,
        method: str,
        version: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: Any,
        token: AccessToken,
        in_batch: bool = False,
    ) -> Awaitable[Reply]: ...
