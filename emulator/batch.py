"""JSON batching: up to 20 requests, `dependsOn`, one status per item (429s included).

Each item goes through the `dispatch` the Graph host passes in (`graph.dispatch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from emulator.errors import GraphError
from emulator.routing import Dispatch, Reply
from emulator.tokens import AccessToken

if TYPE_CHECKING:
    from emulator.runtime import Emulator

MAX_REQUESTS = 20


def invalid(message: str) -> GraphError:
    return GraphError(400, "BadRequest", message)


def parse(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        raise invalid("Invalid batch payload format.")
    requests = body["requests"]
    if not requests:
        raise invalid("Invalid batch payload format: no requests.")
    if len(requests) > MAX_REQUESTS:
        raise invalid(f"Number of batch request steps exceeds the maximum value of {MAX_REQUESTS}.")
    seen: set[str] = set()
    for item in requests:
        if not isinstance(item, dict) or not all(item.get(k) for k in ("id", "method", "url")):
            raise invalid("Each batch request needs an id, a method and a url.")
        if str(item["id"]) in seen:
            raise invalid("Batch request contains duplicate Ids.")
        seen.add(str(item["id"]))
    for item in requests:
        for dep in item.get("dependsOn", []) or []:
            if str(dep) not in seen:
                raise invalid(f"Request {item['id']} depends on unknown request {dep}.")
    return requests


def split_url(url: str, version: str) -> tuple[str, dict[str, str]]:
    url = url.lstrip("/")
    for prefix in ("v1.0/", "beta/"):
        if url.startswith(prefix):
            url = url[len(prefix) :]
    path, _, query = url.partition("?")
    return path, dict(parse_qsl(query, keep_blank_values=True))


async def run_batch(
    emu: Emulator,
    version: str,
    body: Any,
    headers: dict[str, str],
    token: AccessToken,
    *,
    dispatch: Dispatch,
) -> Reply:
    try:
        requests = parse(body)
    except GraphError as err:
        return Reply(err.status, err.body("", headers.get("client-request-id")))
    by_id = {str(item["id"]): item for item in requests}
    done: dict[str, dict[str, Any]] = {}

    async def run(item_id: str) -> dict[str, Any]:
        if item_id in done:
            return done[item_id]
        item = by_id[item_id]
        deps = [str(d) for d in item.get("dependsOn", []) or []]
        failed = False
        for dep in deps:
            failed = (await run(dep))["status"] >= 400 or failed
        if failed:
            err = GraphError(
                424,
                "FailedDependency",
                "The request failed because a request it depends on failed.",
            )
            result = {
                "id": item_id,
                "status": 424,
                "headers": {"Content-Type": "application/json"},
                "body": err.body("", headers.get("client-request-id")),
            }
        else:
            path, query = split_url(str(item["url"]), version)
            item_headers = {k.lower(): str(v) for k, v in (item.get("headers") or {}).items()}
            reply = await dispatch(
                emu,
                str(item["method"]).upper(),
                version,
                path,
                query,
                item_headers,
                item.get("body"),
                token,
                in_batch=True,
            )
            out_headers = dict(reply.headers)
            if reply.body is not None:
                out_headers.setdefault("Content-Type", "application/json")
            result = {
                "id": item_id,
                "status": reply.status,
                "headers": out_headers,
                "body": reply.body,
            }
        done[item_id] = result
        return result

    for item in requests:
        await run(str(item["id"]))
    return Reply(200, {"responses": [done[str(item["id"])] for item in requests]})
