"""The login host: OpenID metadata, JWKS, authorize (HTML), token, admin consent, logout."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from aiohttp import web

from emulator import authorize as flow
from emulator import token_endpoint
from emulator.authorize import AuthorizeRequest, Outcome, PageError
from emulator.directory import MULTI_TENANT_ALIASES
from emulator.errors import AadError
from emulator.runtime import Emulator
from emulator.templates import error_page, form_post_page, sign_in_page, signed_out_page

SESSION_COOKIE = "ESTSAUTH"


def emu_of(request: web.Request) -> Emulator:
    return request.app["emu"]


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )


def aad_response(err: AadError) -> web.Response:
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache", **err.headers}
    return json_response(err.body(), err.status, headers)


def tenant_or_error(emu: Emulator, ref: str) -> str | None:
    """The tenant id for a path segment, None for the multi-tenant aliases."""
    if ref.lower() in MULTI_TENANT_ALIASES:
        return None
    tenant = emu.world.directory.find_tenant(ref)
    if tenant is None:
        raise AadError(
            "invalid_tenant",
            90002,
            f"Tenant '{ref}' not found. Check to make sure "
            "you have the correct tenant ID and are signing into the correct cloud.",
        )
    return tenant.id


async def openid_configuration(request: web.Request) -> web.Response:
    emu = emu_of(request)
    ref = request.match_info["tenant"]
    try:
        tenant_id = tenant_or_error(emu, ref)
    except AadError as err:
        return aad_response(err)
    base = emu.login_base
    path_tenant = tenant_id or ref.lower()
    # Multi-tenant metadata publishes a template issuer: clients substitute the token's tid.
    issuer = f"{base}/{tenant_id or '{tenantid}'}/v2.0"
    return json_response(
        {
            "token_endpoint": f"{base}/{path_tenant}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/{path_tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": issuer,
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{emu.graph_base}/oidc/userinfo",
            "authorization_endpoint": f"{base}/{path_tenant}/oauth2/v2.0/authorize",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{path_tenant}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "cloud_instance_name",
                "cloud_instance_host_name",
                "cloud_graph_host_name",
                "msgraph_host",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "at_hash",
                "c_hash",
                "email",
            ],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "emulator.local",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": emu.graph_base.split("://", 1)[-1],
            "rbac_url": "https://pas.windows.net",
        }
    )


async def jwks(request: web.Request) -> web.Response:
    emu = emu_of(request)
    ref = request.match_info["tenant"]
    try:
        tenant_id = tenant_or_error(emu, ref)
    except AadError as err:
        return aad_response(err)
    issuer = f"{emu.login_base}/{tenant_id or '{tenantid}'}/v2.0"
    return json_response(emu.world.keys.jwks(issuer))


def render(outcome: Outcome, session_user: str | None = None) -> web.Response:
    if outcome.kind == "page":
        return web.Response(
            text=error_page(outcome.code, outcome.message),
            status=outcome.status,
            content_type="text/html",
        )
    if outcome.kind == "form_post":
        response = web.Response(
            text=form_post_page(outcome.url, outcome.fields), content_type="text/html"
        )
    else:
        response = web.Response(status=302, headers={"Location": outcome.url})
    if session_user:
        response.set_cookie(SESSION_COOKIE, session_user, httponly=True, samesite="Lax")
    return response


def page_outcome(err: PageError) -> Outcome:
    return Outcome("page", status=err.status, code=err.code, message=err.message)


def start(
    emu: Emulator, tenant_ref: str, params: dict[str, str], admin: bool = False
) -> AuthorizeRequest | Outcome:
    """Check an authorization request; an Outcome when it already ends (page or redirect)."""
    try:
        req = (flow.check_admin if admin else flow.check_client)(emu, tenant_ref, params)
    except PageError as err:
        return page_outcome(err)
    if admin:
        return req
    try:
        flow.check_request(emu, req)
    except AadError as err:
        return flow.error_outcome(req, err)
    return req


def decide(
    emu: Emulator, req: AuthorizeRequest, user: str, action: str, mfa: bool = True
) -> Outcome:
    try:
        return flow.decide(emu, req, user, action, mfa)
    except PageError as err:
        return page_outcome(err)


async def authorize(request: web.Request) -> web.Response:
    emu = emu_of(request)
    tenant_ref = request.match_info["tenant"]
    params = dict(request.query)
    result = start(emu, tenant_ref, params)
    if isinstance(result, Outcome):
        return render(result)
    req = result
    if params.get("prompt") == "none":
        return render(flow.silent(emu, req, request.cookies.get(SESSION_COOKIE)))
    hint = params.get("login_hint", "").lower()
    selected = next((u.id for u in req.users if u.upn.lower() == hint), None)
    if selected is None and params.get("prompt") not in ("login", "select_account"):
        selected = request.cookies.get(SESSION_COOKIE)
    assert req.scopes is not None
    shown = [*req.scopes.graph, *req.scopes.oidc] or ["User.Read"]
    if req.scopes.default:
        shown = ["All permissions the application is configured for (.default)", *req.scopes.oidc]
    html = sign_in_page(req.app.name, req.users, shown, urlencode(params), selected)
    return web.Response(text=html, content_type="text/html")


async def authorize_post(request: web.Request) -> web.Response:
    emu = emu_of(request)
    form = await request.post()
    params = dict(parse_qsl(str(form.get("params", ""))))
    admin = request.path.endswith("/adminconsent")
    result = start(emu, request.match_info["tenant"], params, admin=admin)
    if isinstance(result, Outcome):
        return render(result)
    user, action = str(form.get("user", "")), str(form.get("action", "cancel"))
    outcome = decide(emu, result, user, action)
    accepted = action == "accept" and outcome.kind != "page" and not admin
    return render(outcome, user if accepted else None)


async def admin_consent(request: web.Request) -> web.Response:
    emu = emu_of(request)
    params = dict(request.query)
    result = start(emu, request.match_info["tenant"], params, admin=True)
    if isinstance(result, Outcome):
        return render(result)
    perms = result.app.application_permissions or ["(no application permissions configured)"]
    html = sign_in_page(
        result.app.name, result.users, perms, urlencode(params), None, admin_consent=True
    )
    return web.Response(text=html, content_type="text/html")


async def token(request: web.Request) -> web.Response:
    emu = emu_of(request)
    settings = emu.world.settings
    form = {k: str(v) for k, v in (await request.post()).items()}
    request["log"] = {"client_id": form.get("client_id"), "grant_type": form.get("grant_type")}
    if settings.token_latency_ms:
        await asyncio.sleep(settings.token_latency_ms / 1000)
    outage = settings.token_outage
    if outage is not None and outage.active(time.time()):
        if outage.remaining is not None:
            outage.remaining -= 1
        emu.tokens.count(
            form.get("client_id", ""), form.get("grant_type", "missing"), emu.tokens.user_of(form)
        )
        headers = {}
        if outage.retry_after is not None:
            headers["Retry-After"] = f"{outage.retry_after:g}"
        return aad_response(
            AadError(
                outage.error,
                90033,
                "A transient error has occurred. Please try again.",
                status=outage.status,
                headers=headers,
            )
        )
    try:
        body = token_endpoint.handle(
            emu, request.match_info["tenant"], form, request.headers.get("Authorization")
        )
    except AadError as err:
        request["log"]["error_codes"] = [err.code]
        return aad_response(err)
    return json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


async def logout(request: web.Request) -> web.Response:
    target = request.query.get("post_logout_redirect_uri")
    response: web.Response
    if target:
        response = web.Response(status=302, headers={"Location": target})
    else:
        response = web.Response(text=signed_out_page(), content_type="text/html")
    response.del_cookie(SESSION_COOKIE)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration)
    app.router.add_get("/{tenant}/discovery/v2.0/keys", jwks)
    app.router.add_get("/{tenant}/oauth2/v2.0/authorize", authorize)
    app.router.add_post("/{tenant}/oauth2/v2.0/authorize", authorize_post)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
    app.router.add_get("/{tenant}/oauth2/v2.0/logout", logout)
    app.router.add_get("/{tenant}/v2.0/adminconsent", admin_consent)
    app.router.add_post("/{tenant}/v2.0/adminconsent", authorize_post)
