"""The control API (`/_emulator/...` on the login port): scenarios, faults, data, counters."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from aiohttp import web

from emulator import scenario
from emulator.authorize import silent
from emulator.control_data import DATA_ROUTES
from emulator.directory import Secret
from emulator.identity import decide, start
from emulator.runtime import Emulator
from emulator.world import Outage

Handler = Callable[[web.Request], Awaitable[web.Response]]


class ControlError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def ok(body: Any = None, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps({"ok": True} if body is None else body),
        status=status,
        content_type="application/json",
    )


@web.middleware
async def control_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/_emulator/"):
        return await handler(request)
    try:
        return await handler(request)
    except ControlError as err:
        return ok({"error": str(err)}, err.status)
    except (scenario.ScenarioError, ValueError, TypeError) as err:
        return ok({"error": str(err)}, 400)
    except KeyError as err:
        return ok({"error": f"not found: {err}"}, 404)


def emu_of(request: web.Request) -> Emulator:
    return request.app["emu"]


async def body_of(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    return orjson.loads(raw) if raw else {}


def user_ref(emu: Emulator, ref: str) -> Any:
    user = emu.world.directory.find_user(ref)
    if user is None:
        raise ControlError(f"unknown user {ref!r}", 404)
    return user


def app_ref(emu: Emulator, client_id: str) -> Any:
    app = emu.world.directory.apps.get(client_id)
    if app is None:
        raise ControlError(f"unknown app {client_id!r}", 404)
    return app


async def health(request: web.Request) -> web.Response:
    return ok(
        {"ok": True, "login": emu_of(request).login_base, "graph": emu_of(request).graph_base}
    )


async def state(request: web.Request) -> web.Response:
    emu = emu_of(request)
    d = emu.world.directory
    return ok(
        {
            "tenants": [
                {
                    "id": t.id,
                    "domain": t.domain,
                    "name": t.name,
                    "users": [u.public() for u in t.users.values()],
                }
                for t in d.tenants.values()
            ],
            "apps": [a.public() for a in d.apps.values()],
            "access_policies": [
                {"client_id": c, **p.public()} for (_, c), p in d.access_policies.items()
            ],
            "settings": {
                k: v for k, v in emu.world.settings.__dict__.items() if k != "token_outage"
            },
        }
    )


async def load_scenario(request: web.Request) -> web.Response:
    emu_of(request).load(await body_of(request))
    return await state(request)


async def add_tenant(request: web.Request) -> web.Response:
    tenant = scenario.add_tenant(emu_of(request).world, await body_of(request))
    return ok({"id": tenant.id, "domain": tenant.domain}, 201)


async def add_user(request: web.Request) -> web.Response:
    emu = emu_of(request)
    tenant = emu.world.directory.find_tenant(request.match_info["tenant"])
    if tenant is None:
        raise ControlError("unknown tenant", 404)
    user = scenario.add_user(emu.world, tenant.id, await body_of(request))
    return ok({"id": user.id, "upn": user.upn}, 201)


async def add_app(request: web.Request) -> web.Response:
    app = scenario.add_app(emu_of(request).world, await body_of(request))
    return ok(
        app.public()
        | {
            "secrets": [
                {"id": s.id, "value": s.value, "expires_at": s.expires_at} for s in app.secrets
            ]
        },
        201,
    )


async def update_app(request: web.Request) -> web.Response:
    app = app_ref(emu_of(request), request.match_info["client_id"])
    body = await body_of(request)
    for key in (
        "redirect_uris",
        "multi_tenant",
        "application_permissions",
        "name",
        "public_client",
        "home_tenant",
        "id_token_amr",
    ):
        if key in body:
            setattr(app, key, body[key])
    return ok(app.public())


def secret_body(secret: Secret) -> dict[str, Any]:
    return {"id": secret.id, "value": secret.value, "expires_at": secret.expires_at}


async def add_secret(request: web.Request) -> web.Response:
    app = app_ref(emu_of(request), request.match_info["client_id"])
    secret = scenario.make_secret(await body_of(request))
    app.secrets.append(secret)
    return ok(secret_body(secret), 201)


async def update_secret(request: web.Request) -> web.Response:
    app = app_ref(emu_of(request), request.match_info["client_id"])
    ref = request.match_info["secret"]
    secret = next((s for s in app.secrets if ref in (s.id, s.value)), None)
    if secret is None:
        raise ControlError("unknown secret", 404)
    body = await body_of(request)
    if body.get("expired"):
        secret.expires_at = time.time() - 1
    elif "expires_in" in body:
        secret.expires_at = time.time() + float(body["expires_in"])
    elif "expires_at" in body:
        secret.expires_at = scenario.parse_time(body["expires_at"])
    return ok(secret_body(secret))


async def delete_secret(request: web.Request) -> web.Response:
    app = app_ref(emu_of(request), request.match_info["client_id"])
    ref = request.match_info["secret"]
    app.secrets = [s for s in app.secrets if ref not in (s.id, s.value)]
    return ok()


async def add_certificate(request: web.Request) -> web.Response:
    app = app_ref(emu_of(request), request.match_info["client_id"])
    body = await body_of(request)
    cert = scenario.certificate(body["pem"], body.get("thumbprint"))
    app.certificates.append(cert)
    return ok({"thumbprint": cert.thumbprint}, 201)


async def add_consent(request: web.Request) -> web.Response:
    scenario.add_consent(emu_of(request).world, await body_of(request))
    return ok()


async def revoke_admin_consent(request: web.Request) -> web.Response:
    """An administrator revokes the app's admin consent in their tenant (Enterprise
    applications → Permissions → Review permissions); app tokens issued later carry no roles
    until consent is granted again. Tokens already issued keep theirs until they expire."""
    emu = emu_of(request)
    body = await body_of(request)
    tenant = emu.world.directory.find_tenant(body["tenant"])
    if tenant is None:
        raise ControlError("unknown tenant", 404)
    return ok({"revoked": emu.world.directory.revoke(tenant.id, body["client_id"], None)})


async def set_access_policy(request: web.Request) -> web.Response:
    """Exchange application access policy of an app (`scenario.set_access_policy`)."""
    emu = emu_of(request)
    body = await body_of(request)
    policy = scenario.set_access_policy(emu.world, request.match_info["client_id"], body)
    return ok({"policy": policy})


async def revoke_grant(request: web.Request) -> web.Response:
    emu = emu_of(request)
    body = await body_of(request)
    user = user_ref(emu, body["user"])
    client_id = body.get("client_id")
    apps = [client_id] if client_id else list(emu.world.directory.apps)
    for cid in apps:
        emu.world.directory.revoke(user.tenant_id, cid, user.id)
    count = emu.tokens.revoke_user(
        user.tenant_id, user.id, client_id, bool(body.get("access_tokens", False))
    )
    return ok({"revoked_grants": count})


async def require_mfa(request: web.Request) -> web.Response:
    emu = emu_of(request)
    user = user_ref(emu, request.match_info["user"])
    body = await body_of(request)
    user.mfa_required_since = time.time() if body.get("required", True) else None
    error = body.get("error", "interaction_required")
    if error not in ("interaction_required", "invalid_grant"):
        raise ControlError("error must be interaction_required or invalid_grant")
    user.mfa_error = error
    return ok()


async def update_settings(request: web.Request) -> web.Response:
    emu = emu_of(request)
    scenario.apply_settings(emu.world.settings, await body_of(request))
    return await state(request)


async def set_outage(request: web.Request) -> web.Response:
    body = await body_of(request)
    duration = body.get("duration")
    emu_of(request).world.settings.token_outage = Outage(
        status=int(body.get("status", 503)),
        remaining=body.get("count"),
        until=time.time() + float(duration) if duration is not None else None,
        error=body.get("error", "temporarily_unavailable"),
        retry_after=body.get("retry_after"),
    )
    return ok()


async def clear_outage(request: web.Request) -> web.Response:
    emu_of(request).world.settings.token_outage = None
    return ok()


async def rotate_keys(request: web.Request) -> web.Response:
    body = await body_of(request)
    key = emu_of(request).world.keys.rotate(keep_old=body.get("keep_old", True))
    return ok({"kid": key.kid})


async def sign_in(request: web.Request) -> web.Response:
    """What a browser would get for an authorize URL and a user pressing Accept (or Cancel)."""
    emu = emu_of(request)
    body = await body_of(request)
    url = body.get("authorize_url") or body["url"]
    parts = urlsplit(url)
    segments = parts.path.strip("/").split("/")
    admin = parts.path.endswith("/adminconsent")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    result = start(emu, segments[0], params, admin=admin)
    if not hasattr(result, "app"):
        return ok(result.public())  # type: ignore[union-attr]
    if params.get("prompt") == "none" and not admin:
        # A silent sign-in by a user who has a Microsoft session: no page, consent as it is.
        ref = str(body.get("user", "")).lower()
        user = next((u for u in result.users if ref in (u.id, u.upn.lower())), None)  # type: ignore[union-attr]
        return ok(silent(emu, result, user.id if user else None).public())  # type: ignore[arg-type]
    outcome = decide(
        emu,
        result,
        body.get("user", ""),
        body.get("action", "accept"),  # type: ignore[arg-type]
        mfa=body.get("mfa", True),
    )
    return ok(outcome.public())


async def set_throttling(request: web.Request) -> web.Response:
    """One scope's limit (`Throttle.set_limit`): app, mailbox, tenant (the directory), drive or
    subscriptions."""
    emu = emu_of(request)
    return ok(emu.throttle.set_limit(request.match_info["scope"], await body_of(request)))


async def throttling(request: web.Request) -> web.Response:
    """The limits set, by scope and `client:target` (unset ones are Microsoft's)."""
    return ok(
        {
            scope: {f"{c}:{t}": policy.__dict__ for (c, t), policy in table.items()}
            for scope, table in emu_of(request).throttle.policies.items()
        }
    )


async def counters(request: web.Request) -> web.Response:
    return ok(emu_of(request).throttle.counters())


async def reset_counters(request: web.Request) -> web.Response:
    emu = emu_of(request)
    emu.throttle.reset()
    emu.world.request_log.clear()
    emu.tokens.requests.clear()
    return ok()


async def request_log(request: web.Request) -> web.Response:
    emu = emu_of(request)
    entries = list(emu.world.request_log)
    host = request.query.get("host")
    if host:
        entries = [e for e in entries if e.get("host") == host]
    limit = int(request.query.get("limit", "1000"))
    return ok({"requests": entries[-limit:]})


async def token_requests(request: web.Request) -> web.Response:
    return ok({"token_requests": emu_of(request).tokens.request_counts()})


async def introspect(request: web.Request) -> web.Response:
    body = await body_of(request)
    token = emu_of(request).tokens.lookup(body["token"])
    if token is None:
        raise ControlError("unknown access token", 404)
    return ok(token.public())


async def expire_access_tokens(request: web.Request) -> web.Response:
    emu = emu_of(request)
    body = await body_of(request)
    count = 0
    for token in emu.tokens.access.values():
        if body.get("token") in (None, token.token) and body.get("client_id") in (
            None,
            token.client_id,
        ):
            token.expires_at = time.time() - 1
            count += 1
    return ok({"expired": count})


async def subscriptions(request: web.Request) -> web.Response:
    emu = emu_of(request)
    return ok(
        {
            "subscriptions": [
                s.public(emu.graph_base) | {"family": s.family}
                for s in emu.subscriptions.items.values()
            ],
            "deliveries": emu.subscriptions.deliveries[-500:],
        }
    )


async def fire_lifecycle(request: web.Request) -> web.Response:
    body = await body_of(request)
    status = await emu_of(request).subscriptions.lifecycle(request.match_info["id"], body["event"])
    return ok({"status": status})


async def fire_change(request: web.Request) -> web.Response:
    emu = emu_of(request)
    subs = emu.subscriptions
    sub = subs.items[request.match_info["id"]]
    body = await body_of(request)
    status = await subs.deliver(
        sub, body.get("changeType", "updated"), body.get("item_id", "AAMkADemulated"), None
    )
    return ok({"status": status})


def add_routes(app: web.Application) -> None:
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/health", health),
        ("GET", "/state", state),
        ("PUT", "/scenario", load_scenario),
        ("POST", "/tenants", add_tenant),
        ("POST", "/tenants/{tenant}/users", add_user),
        ("POST", "/apps", add_app),
        ("PATCH", "/apps/{client_id}", update_app),
        ("POST", "/apps/{client_id}/secrets", add_secret),
        ("PATCH", "/apps/{client_id}/secrets/{secret}", update_secret),
        ("DELETE", "/apps/{client_id}/secrets/{secret}", delete_secret),
        ("POST", "/apps/{client_id}/certificates", add_certificate),
        ("POST", "/consents", add_consent),
        ("POST", "/consents/revoke", revoke_admin_consent),
        ("PUT", "/apps/{client_id}/access-policy", set_access_policy),
        ("POST", "/grants/revoke", revoke_grant),
        ("POST", "/users/{user}/mfa", require_mfa),
        ("PATCH", "/settings", update_settings),
        ("PUT", "/token-endpoint/outage", set_outage),
        ("DELETE", "/token-endpoint/outage", clear_outage),
        ("POST", "/keys/rotate", rotate_keys),
        ("POST", "/sign-in", sign_in),
        ("GET", "/throttling", throttling),
        ("PUT", "/throttling/{scope}", set_throttling),
        ("GET", "/counters", counters),
        ("DELETE", "/counters", reset_counters),
        ("GET", "/requests", request_log),
        ("GET", "/token-requests", token_requests),
        ("POST", "/access-tokens/introspect", introspect),
        ("POST", "/access-tokens/expire", expire_access_tokens),
        ("GET", "/subscriptions", subscriptions),
        ("POST", "/subscriptions/{id}/lifecycle", fire_lifecycle),
        ("POST", "/subscriptions/{id}/notify", fire_change),
        *DATA_ROUTES,
    ]
    for method, path, handler in routes:
        app.router.add_route(method, "/_emulator" + path, handler)
