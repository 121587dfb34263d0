"""`POST /{tenant}/oauth2/v2.0/token`: client authentication and the three grants."""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import jwt

from emulator import scopes as scope_rules
from emulator.directory import MULTI_TENANT_ALIASES, App, Tenant
from emulator.errors import AadError
from emulator.tokens import Grant

if TYPE_CHECKING:
    from emulator.runtime import Emulator

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def invalid_client(code: int, message: str) -> AadError:
    # invalid_client has been observed as 401 from the v2 token endpoint.
    return AadError("invalid_client", code, message, status=401)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip()).decode()
    except ValueError:
        return None
    user, _, password = raw.partition(":")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote_plus(user), unquote_plus(password)


def resolve_tenant(emu: Emulator, ref: str) -> Tenant | None:
    if ref.lower() in MULTI_TENANT_ALIASES:
        return None
    tenant = emu.world.directory.find_tenant(ref)
    if tenant is None:
        raise AadError(
            "invalid_request",
            90002,
            f"Tenant '{ref}' not found. Check to make sure "
            "you have the correct tenant ID and are signing into the correct cloud.",
        )
    return tenant


def authenticate(
    emu: Emulator, tenant_ref: str, form: dict[str, str], authorization: str | None
) -> App:
    basic = basic_credentials(authorization)
    client_id = form.get("client_id") or (basic[0] if basic else "")
    if not client_id:
        raise AadError(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        )
    app = emu.world.directory.apps.get(client_id)
    tenant = resolve_tenant(emu, tenant_ref)
    if app is None or (
        tenant is not None and not app.multi_tenant and app.home_tenant != tenant.id
    ):
        raise AadError(
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' "
            f"was not found in the directory '{tenant.id if tenant else tenant_ref}'. "
            "This can happen if the application has not been installed by the "
            "administrator of the tenant or consented to by any user in the tenant. You "
            "may have sent your authentication request to the wrong tenant.",
        )
    if tenant is None and tenant_ref.lower() != "consumers" and not app.multi_tenant:
        raise AadError(
            "invalid_request",
            50194,
            f"Application '{app.client_id}'({app.name}) is "
            "not configured as a multi-tenant application. Usage of the /common "
            "endpoint is not supported for such applications created after "
            "'10/15/2018'. Use a tenant-specific endpoint or configure the application "
            "to be multi-tenant.",
        )
    secret = form.get("client_secret") or (basic[1] if basic else None)
    if form.get("client_assertion"):
        check_assertion(emu, app, tenant_ref, form)
    elif secret is not None:
        check_secret(app, secret)
    elif not app.public_client:
        raise invalid_client(
            7000218,
            "The request body must contain the following parameter: "
            "'client_assertion' or 'client_secret'.",
        )
    return app


def check_secret(app: App, value: str) -> None:
    for secret in app.secrets:
        if secret.value == value:
            if secret.expires_at is not None and time.time() >= secret.expires_at:
                raise invalid_client(
                    7000222,
                    f"The provided client secret keys for app "
                    f"'{app.client_id}' are expired. Visit the Azure portal to "
                    "create new keys for your app: https://aka.ms/NewClientSecret, "
                    "or consider using certificate credentials for added "
                    "security: https://aka.ms/certCreds.",
                )
            return
    raise invalid_client(
        7000215,
        "Invalid client secret provided. Ensure the secret being sent "
        "in the request is the client secret value, not the client secret ID, "
        f"for a secret added to app '{app.client_id}'.",
    )


def check_assertion(emu: Emulator, app: App, tenant_ref: str, form: dict[str, str]) -> None:
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise AadError("invalid_request", 50027, "Invalid client_assertion_type.")
    assertion = form["client_assertion"]
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as exc:
        raise invalid_client(
            700027, f"Client assertion failed signature validation. ({exc})"
        ) from exc
    s256 = header.get("x5t#S256")
    thumb = s256 or header.get("x5t") or header.get("kid")
    cert = next(
        (
            c
            for c in app.certificates
            if (s256 and c.thumbprint_s256 == s256) or (not s256 and c.thumbprint == thumb)
        ),
        None,
    )
    if cert is None:
        raise invalid_client(
            700027,
            "Client assertion failed signature validation. [Reason - "
            f"The key was not found., Thumbprint of key used by client: '{thumb}']",
        )
    try:
        claims = jwt.decode(
            assertion,
            cert.public_key,
            algorithms=["RS256", "PS256"],
            options={"verify_aud": False, "require": ["exp", "iss", "sub", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise invalid_client(
            700024, "Client assertion is not within its valid time range."
        ) from exc
    except jwt.PyJWTError as exc:
        raise invalid_client(
            700027, f"Client assertion failed signature validation. ({exc})"
        ) from exc
    if claims["iss"] != app.client_id or claims["sub"] != app.client_id:
        raise invalid_client(
            700021, "Client assertion application identifier doesn't match 'client_id' parameter."
        )
    audience = claims["aud"] if isinstance(claims["aud"], str) else " ".join(claims["aud"])
    if not audience.startswith(emu.world.login_base) or "/oauth2/v2.0/token" not in audience:
        raise invalid_client(
            700212, f"The audience '{audience}' of the client assertion is not this token endpoint."
        )


def token_response(
    emu: Emulator,
    grant: Grant,
    scopes: list[str],
    refresh: str | None,
    nonce: str | None = None,
    oidc: list[str] | None = None,
) -> dict[str, Any]:
    at = emu.tokens.new_access(grant.tenant_id, grant.user_id, grant.client_id, scopes, [])
    lifetime = int(at.expires_at - at.issued_at)
    oidc = [s for s in (grant.oidc if oidc is None else oidc) if s != "offline_access"]
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": " ".join([*scopes, *oidc]),
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": at.token,
    }
    if refresh is not None:
        body["refresh_token"] = refresh
    if "openid" in oidc:
        body["id_token"] = emu.id_token(grant, nonce)
    return body


def authorization_code(emu: Emulator, app: App, form: dict[str, str]) -> dict[str, Any]:
    grant = emu.tokens.redeem(
        app.client_id, form.get("code", ""), form.get("redirect_uri", ""), form.get("code_verifier")
    )
    refresh = emu.tokens.new_refresh(grant) if "offline_access" in grant.oidc else None
    return token_response(emu, grant, grant.graph_scopes, refresh, grant.nonce)


def refresh_token(emu: Emulator, app: App, form: dict[str, str]) -> dict[str, Any]:
    grant, old = emu.tokens.use_refresh(app.client_id, form.get("refresh_token", ""))
    scopes = grant.graph_scopes
    oidc = None
    if form.get("scope"):
        wanted = scope_rules.parse(form["scope"], emu.world.graph_base)
        if wanted.graph and not set(wanted.graph) <= set(grant.graph_scopes):
            missing = sorted(set(wanted.graph) - set(grant.graph_scopes))
            raise AadError(
                "invalid_grant",
                65001,
                "The user or administrator has not consented "
                f"to use the application with ID '{app.client_id}' named '{app.name}' "
                f"for {' '.join(missing)}. Send an interactive authorization request "
                "for this user and resource.",
                suberror="consent_required",
            )
        scopes = wanted.graph or grant.graph_scopes
        oidc = [s for s in wanted.oidc if s in grant.oidc]
    return token_response(emu, grant, scopes, emu.tokens.rotate(grant, old), oidc=oidc)


def client_credentials(
    emu: Emulator, app: App, tenant_ref: str, form: dict[str, str]
) -> dict[str, Any]:
    if tenant_ref.lower() in MULTI_TENANT_ALIASES:
        raise AadError(
            "invalid_request",
            9001023,
            "The grant type is not supported over the "
            f"/{tenant_ref} endpoint. Please use a tenant-specific endpoint (tenant ID "
            "or domain).",
        )
    tenant = resolve_tenant(emu, tenant_ref)
    assert tenant is not None
    wanted = scope_rules.parse(form.get("scope"), emu.world.graph_base)
    if not wanted.default or wanted.graph or wanted.oidc:
        raise AadError(
            "invalid_scope",
            70011,
            "The provided value for the input parameter "
            f"'scope' is not valid. The scope {form.get('scope', '')} is not valid: "
            "client credentials need '<resource>/.default' alone.",
        )
    if not emu.world.directory.app_visible_in(app, tenant.id):
        raise AadError(
            "unauthorized_client",
            700016,
            f"Application with identifier "
            f"'{app.client_id}' was not found in the directory '{tenant.id}'.",
        )
    admin = emu.world.directory.consent(tenant.id, app.client_id, None)
    # Without admin consent the token is still issued, with no roles: Graph answers 403.
    roles = sorted(admin.scopes) if admin else []
    at = emu.tokens.new_access(tenant.id, None, app.client_id, [], roles)
    lifetime = int(at.expires_at - at.issued_at)
    return {
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": at.token,
    }


def handle(
    emu: Emulator, tenant_ref: str, form: dict[str, str], authorization: str | None
) -> dict[str, Any]:
    grant_type = form.get("grant_type", "")
    basic = basic_credentials(authorization)
    client_id = form.get("client_id") or (basic[0] if basic else "")
    emu.tokens.count(client_id, grant_type or "missing", emu.tokens.user_of(form))
    app = authenticate(emu, tenant_ref, form, authorization)
    if grant_type == "authorization_code":
        return authorization_code(emu, app, form)
    if grant_type == "refresh_token":
        return refresh_token(emu, app, form)
    if grant_type == "client_credentials":
        return client_credentials(emu, app, tenant_ref, form)
    raise AadError(
        "unsupported_grant_type",
        70003,
        f"The app requested an unsupported grant type '{grant_type}'.",
    )
