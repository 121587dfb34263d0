"""The authorization and admin-consent requests: checks, the user's decision, the way back.

Errors before the redirect URI is trusted (unknown tenant or client, redirect-URI mismatch) are
shown as a page, never redirected, as Microsoft does; every later error goes back to the
redirect URI as `error`, `error_description` and `state`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from emulator import scopes as scope_rules
from emulator.directory import MULTI_TENANT_ALIASES, App, Tenant, User
from emulator.errors import AadError

if TYPE_CHECKING:
    from emulator.runtime import Emulator

PROMPTS = ("login", "none", "consent", "select_account")


class PageError(Exception):
    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass
class Outcome:
    kind: str  # redirect | form_post | page
    url: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    status: int = 200
    code: int = 0
    message: str = ""

    def public(self) -> dict[str, Any]:
        if self.kind == "page":
            return {
                "type": "error_page",
                "status": self.status,
                "error_code": self.code,
                "message": self.message,
            }
        if self.kind == "form_post":
            return {"type": "form_post", "action": self.url, "fields": self.fields}
        return {
            "type": "redirect",
            "url": self.url,
            "params": dict(parse_qsl(urlsplit(self.url).query or urlsplit(self.url).fragment)),
        }


@dataclass
class AuthorizeRequest:
    tenant_ref: str
    params: dict[str, str]
    app: App
    tenant: Tenant | None
    redirect_uri: str
    users: list[User]
    scopes: scope_rules.Scopes | None = None
    admin: bool = False

    @property
    def state(self) -> str | None:
        return self.params.get("state")


def find_tenant(emu: Emulator, ref: str) -> Tenant | None:
    if ref.lower() in MULTI_TENANT_ALIASES:
        return None
    tenant = emu.world.directory.find_tenant(ref)
    if tenant is None:
        raise PageError(
            90002,
            f"Tenant '{ref}' not found. Check to make sure you have the "
            "correct tenant ID and are signing into the correct cloud.",
        )
    return tenant


def check_client(emu: Emulator, tenant_ref: str, params: dict[str, str]) -> AuthorizeRequest:
    """The checks whose failure must not redirect: tenant, client, redirect URI."""
    tenant = find_tenant(emu, tenant_ref)
    client_id = params.get("client_id", "")
    if not client_id:
        raise PageError(
            900144, "The request body must contain the following parameter: 'client_id'."
        )
    app = emu.world.directory.apps.get(client_id)
    shown_tenant = tenant.id if tenant else tenant_ref
    if app is None or (
        tenant is not None and not app.multi_tenant and app.home_tenant != tenant.id
    ):
        raise PageError(
            700016,
            f"Application with identifier '{client_id}' was not found in the "
            f"directory '{shown_tenant}'. This can happen if the application has not "
            "been installed by the administrator of the tenant or consented to by any "
            "user in the tenant. You may have sent your authentication request to the "
            "wrong tenant.",
        )
    redirect_uri = params.get("redirect_uri", "")
    if not app.redirect_uris:
        raise PageError(500113, "No reply address is registered for the application.")
    if redirect_uri not in app.redirect_uris:
        raise PageError(
            50011,
            f"The redirect URI '{redirect_uri}' specified in the request does "
            "not match the redirect URIs configured for the application "
            f"'{client_id}'. Make sure the redirect URI sent in the request matches "
            "one added to your application in the Azure portal. Navigate to "
            "https://aka.ms/redirectUriMismatchError to learn more about how to fix "
            "this.",
        )
    if tenant is not None:
        users = list(tenant.users.values())
    elif tenant_ref.lower() == "consumers":
        users = []
    else:
        users = emu.world.directory.all_users() if app.multi_tenant else []
    return AuthorizeRequest(tenant_ref, params, app, tenant, redirect_uri, users)


def check_request(emu: Emulator, req: AuthorizeRequest) -> None:
    """The checks whose failure goes back to the redirect URI."""
    p = req.params
    if p.get("response_type") != "code":
        raise AadError(
            "unsupported_response_type",
            700054,
            f"response_type '{p.get('response_type', '')}' is not supported: the "
            "emulator implements the authorization code flow only.",
        )
    if p.get("response_mode", "query") not in ("query", "form_post", "fragment"):
        raise AadError("invalid_request", 900144, "The response_mode is not valid.")
    if req.tenant is None and req.tenant_ref.lower() != "consumers" and not req.app.multi_tenant:
        raise AadError(
            "invalid_request",
            50194,
            f"Application '{req.app.client_id}'({req.app.name}) is not configured as "
            "a multi-tenant application. Usage of the /common endpoint is not "
            "supported for such applications created after '10/15/2018'. Use a "
            "tenant-specific endpoint or configure the application to be multi-tenant.",
        )
    prompt = p.get("prompt")
    if prompt is not None and prompt not in PROMPTS:
        raise AadError("invalid_request", 90023, f"Invalid prompt value '{prompt}'.")
    if prompt == "select_account" and p.get("login_hint"):
        raise AadError(
            "invalid_request", 90023, "login_hint cannot be combined with prompt=select_account."
        )
    method = p.get("code_challenge_method", "plain" if p.get("code_challenge") else "")
    if method and method not in ("S256", "plain"):
        raise AadError("invalid_request", 501491, "Invalid code_challenge_method.")
    req.scopes = scope_rules.parse(p.get("scope"), emu.world.graph_base)


def graph_scopes_for(emu: Emulator, req: AuthorizeRequest, user: User) -> list[str]:
    assert req.scopes is not None
    if not req.scopes.default:
        return req.scopes.graph or ["User.Read"]
    consented: set[str] = set()
    for who in (user.id, None):
        found = emu.world.directory.consent(user.tenant_id, req.app.client_id, who)
        if found:
            consented |= found.scopes
    return sorted(consented) or ["User.Read"]


def respond(req: AuthorizeRequest, fields: dict[str, str]) -> Outcome:
    if req.state is not None:
        fields = {**fields, "state": req.state}
    mode = req.params.get("response_mode", "query")
    if mode == "form_post" and not req.admin:
        return Outcome("form_post", url=req.redirect_uri, fields=fields)
    sep = "#" if mode == "fragment" and not req.admin else ("&" if "?" in req.redirect_uri else "?")
    return Outcome("redirect", url=req.redirect_uri + sep + urlencode(fields))


def error_outcome(req: AuthorizeRequest, err: AadError) -> Outcome:
    return respond(req, err.redirect_params())


def issue_code(emu: Emulator, req: AuthorizeRequest, user: User, mfa_at: float | None) -> Outcome:
    assert req.scopes is not None
    p = req.params
    code = emu.tokens.new_code(
        client_id=req.app.client_id,
        redirect_uri=req.redirect_uri,
        tenant_id=user.tenant_id,
        user_id=user.id,
        graph_scopes=graph_scopes_for(emu, req, user),
        oidc=req.scopes.oidc,
        nonce=p.get("nonce"),
        challenge=p.get("code_challenge"),
        challenge_method=p.get("code_challenge_method", "plain"),
        mfa_at=mfa_at,
    )
    return respond(req, {"code": code.code, "session_state": str(uuid.uuid4())})


def decide(
    emu: Emulator, req: AuthorizeRequest, user_id: str, action: str, mfa: bool = True
) -> Outcome:
    """What the browser gets after the user presses Accept or Cancel."""
    if action != "accept":
        return error_outcome(
            req,
            AadError(
                "access_denied",
                65004,
                "User declined to consent to access the app.",
                suberror="consent_required",
            ),
        )
    user = next((u for u in req.users if u.id == user_id or u.upn.lower() == user_id.lower()), None)
    if user is None:
        raise PageError(
            50020,
            f"User account '{user_id}' from identity provider does not exist "
            "in tenant and cannot access the application.",
        )
    if not user.account_enabled:  # Microsoft stops on its own page; nothing goes back
        raise PageError(
            50057, "User account is disabled. The account has been disabled by an administrator."
        )
    if req.admin:
        return admin_decision(emu, req, user)
    emu.world.directory.grant(
        user.tenant_id, req.app.client_id, user.id, set(graph_scopes_for(emu, req, user))
    )
    mfa_at = time.time() if mfa else None
    if not mfa:
        try:
            emu.tokens.check_mfa(user, None)
        except AadError as err:
            return error_outcome(req, AadError("interaction_required", 50076, err.message))
    return issue_code(emu, req, user, mfa_at)


def silent(emu: Emulator, req: AuthorizeRequest, session_user: str | None) -> Outcome:
    """prompt=none: succeed only with a session, consent already given and MFA satisfied."""
    user = next((u for u in req.users if u.id == session_user), None)
    if user is None:
        return error_outcome(
            req,
            AadError(
                "login_required",
                50058,
                "A silent sign-in request was sent but no user is signed in.",
            ),
        )
    assert req.scopes is not None
    consent = emu.world.directory.consent(user.tenant_id, req.app.client_id, user.id)
    admin = emu.world.directory.consent(user.tenant_id, req.app.client_id, None)
    wanted = set(req.scopes.graph)
    have = (consent.scopes if consent else set()) | (admin.scopes if admin else set())
    if (consent is None and admin is None) or not wanted <= have:
        return error_outcome(
            req,
            AadError(
                "consent_required",
                65001,
                f"The user or administrator has not consented to use the "
                f"application with ID '{req.app.client_id}' named '{req.app.name}'. Send an "
                "interactive authorization request for this user and resource.",
                suberror="consent_required",
            ),
        )
    try:
        emu.tokens.check_mfa(user, None)
    except AadError as err:
        return error_outcome(req, AadError("interaction_required", 50076, err.message))
    return issue_code(emu, req, user, time.time())


# admin consent


def check_admin(emu: Emulator, tenant_ref: str, params: dict[str, str]) -> AuthorizeRequest:
    if tenant_ref.lower() in ("common", "consumers"):
        raise PageError(
            90130,
            f"Admin consent is not supported on the /{tenant_ref} endpoint: "
            "use the tenant's id or domain, or /organizations.",
        )
    req = check_client(emu, tenant_ref, params)
    req.admin = True
    req.users = [u for u in req.users if u.is_admin] or req.users
    return req


def admin_decision(emu: Emulator, req: AuthorizeRequest, user: User) -> Outcome:
    if not user.is_admin:
        return error_outcome(
            req,
            AadError(
                "consent_required",
                90094,
                "Admin consent is required for the permissions requested by this application.",
                suberror="consent_required",
            ),
        )
    perms = set(req.app.application_permissions)
    emu.world.directory.grant(user.tenant_id, req.app.client_id, None, perms)
    scope = req.params.get("scope", "https://graph.microsoft.com/.default")
    return respond(req, {"admin_consent": "True", "tenant": user.tenant_id, "scope": scope})
