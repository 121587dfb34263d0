"""ID-token validation (docs/microsoft.md, "ID tokens"): signature against the JWKS, issuer built
from `tid`, audience, nonce, lifetime, and the pinned tenant of a single-tenant app."""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass

import jwt
import requests
from django.conf import settings

from connections.clouds import CONSUMER_TENANT_ID, MULTI_TENANT_AUTHORITIES, is_guid
from connections.models import EntraApp

LEEWAY_SECONDS = 120
JWKS_CACHE_SECONDS = 24 * 3600
# An unknown `kid` re-fetches the JWKS at most this often, so forged tokens cannot make us
# hammer Microsoft's key endpoint.
JWKS_REFETCH_COOLDOWN_SECONDS = 5

_jwks_clients: dict[str, jwt.PyJWKClient] = {}
_tenant_ids: dict[str, str] = {}
_lock = threading.Lock()


class InvalidIdToken(Exception):
    """The ID token failed a check; the message says which, in words for a log or an admin."""


@dataclass(frozen=True)
class Identity:
    tenant_id: str
    object_id: str
    subject: str
    name: str
    username: str
    email: str
    claims: dict


def _jwks_client(url: str) -> jwt.PyJWKClient:
    # One cached client per JWKS URL: PyJWKClient keeps the keys and fetches them again when a
    # token names a `kid` it does not know (Microsoft rotates signing keys).
    with _lock:
        client = _jwks_clients.get(url)
        if client is None:
            client = jwt.PyJWKClient(
                url,
                cache_keys=True,
                lifespan=JWKS_CACHE_SECONDS,
                timeout=settings.MICROSOFT_HTTP_TIMEOUT,
                cooldown_duration=JWKS_REFETCH_COOLDOWN_SECONDS,
            )
            _jwks_clients[url] = client
        return client


def expected_tenant(app: EntraApp) -> str | None:
    """The tenant GUID a token must come from, or None when any tenant may sign in."""
    authority = app.authority
    if authority == "consumers":
        return CONSUMER_TENANT_ID
    if authority in MULTI_TENANT_AUTHORITIES:
        return None
    if is_guid(authority):
        return authority.lower()
    # A verified domain: its OpenID metadata names the tenant's GUID in the issuer.
    with _lock:
        cached = _tenant_ids.get(app.metadata_url)
    if cached:
        return cached
    try:
        response = requests.get(app.metadata_url, timeout=settings.MICROSOFT_HTTP_TIMEOUT)
        response.raise_for_status()
        issuer = response.json()["issuer"]
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise InvalidIdToken(f"cannot read the tenant of {authority}: {exc}") from exc
    tenant_id = issuer.rstrip("/").split("/")[-2].lower()
    if not is_guid(tenant_id):
        raise InvalidIdToken(f"the metadata of {authority} names no tenant GUID ({issuer})")
    with _lock:
        _tenant_ids[app.metadata_url] = tenant_id
    return tenant_id


def validate(app: EntraApp, id_token: str, nonce: str) -> Identity:
    try:
        unverified = jwt.decode(id_token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise InvalidIdToken(f"not a JWT: {exc}") from exc
    tenant_id = str(unverified.get("tid", "")).lower()
    if not is_guid(tenant_id):
        raise InvalidIdToken("the tid claim is not a tenant GUID")
    # Multi-tenant metadata publishes the issuer as {login}/{tenantid}/v2.0: substitute the
    # token's own tid and require an exact match (docs/microsoft.md, "ID tokens").
    issuer = f"{app.hosts.login}/{tenant_id}/v2.0"
    try:
        signing_key = _jwks_client(app.jwks_url).get_signing_key_from_jwt(id_token)
        claims = jwt.decode(
            id_token,
            signing_key.key,
            algorithms=["RS256"],
            audience=app.client_id,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "aud", "iss", "tid", "oid", "sub", "nonce"]},
        )
    except jwt.PyJWKClientError as exc:
        raise InvalidIdToken(f"no signing key for this token: {exc}") from exc
    except jwt.InvalidIssuerError as exc:
        raise InvalidIdToken(f"wrong issuer (expected {issuer})") from exc
    except jwt.InvalidAudienceError as exc:
        raise InvalidIdToken("wrong audience: the token was not issued to this app") from exc
    except jwt.ExpiredSignatureError as exc:
        raise InvalidIdToken("the token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise InvalidIdToken("the token is not valid yet") from exc
    except jwt.InvalidSignatureError as exc:
        raise InvalidIdToken("bad signature") from exc
    except jwt.PyJWTError as exc:
        raise InvalidIdToken(str(exc)) from exc
    if not hmac.compare_digest(str(claims["nonce"]), nonce):
        raise InvalidIdToken("the nonce does not match this sign-in (a replayed token?)")
    pinned = expected_tenant(app)
    if pinned and tenant_id != pinned:
        raise InvalidIdToken(f"the account is from tenant {tenant_id}, not the app's {pinned}")
    return Identity(
        tenant_id=tenant_id,
        object_id=str(claims["oid"]).lower(),
        subject=str(claims["sub"]),
        name=str(claims.get("name", "")),
        username=str(claims.get("preferred_username", "")),
        email=str(claims.get("email", "")),
        claims=claims,
    )
