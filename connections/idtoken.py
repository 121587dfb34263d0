"""ID-token validation (docs/microsoft.md, "ID tokens"): signature against the JWKS, issuer built
from `tid`, audience, nonce, lifetime, and the pinned tenant of a single-tenant app.

The JWKS and the OpenID metadata are fetched through core.outbound, like every other request to
a login host: PyJWT's PyJWKClient fetches with urllib, which follows redirects and reaches any
address, so the keys are fetched here and handed to PyJWT as a PyJWKSet, with PyJWKClient's
cache and its re-fetch on an unknown `kid` kept.
"""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass, field

import jwt
import requests
from django.conf import settings

from connections.clouds import CONSUMER_TENANT_ID, MULTI_TENANT_AUTHORITIES, is_guid
from connections.models import EntraApp
from core import outbound

LEEWAY_SECONDS = 120
JWKS_CACHE_SECONDS = 24 * 3600
# An unknown `kid` re-fetches the JWKS at most this often, so forged tokens cannot make us
# hammer Microsoft's key endpoint.
JWKS_REFETCH_COOLDOWN_SECONDS = 5

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


def _get_json(url: str) -> object:
    """A JSON document from a login host, through core.outbound; InvalidIdToken in words that
    name the host and the status, never the answer's text (the host may be anyone's)."""
    host = outbound.host_of(url)
    try:
        with outbound.Session() as http:
            response = http.get(url, timeout=settings.MICROSOFT_HTTP_TIMEOUT)
    except outbound.Redirected as exc:
        raise InvalidIdToken(str(exc)) from exc
    except requests.RequestException as exc:
        raise InvalidIdToken(f"{host} could not be reached") from exc
    if response.status_code != 200:
        raise InvalidIdToken(f"unexpected answer (HTTP {response.status_code}) from {host}")
    try:
        return response.json()
    except ValueError as exc:
        raise InvalidIdToken(f"unexpected answer (not JSON) from {host}") from exc


@dataclass
class _JwksClient:
    """The signing keys of one JWKS URL: kept JWKS_CACHE_SECONDS, and fetched again when a token
    names a `kid` they lack (Microsoft rotates signing keys), at most every
    JWKS_REFETCH_COOLDOWN_SECONDS."""

    url: str
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float | None = None  # time.monotonic() of the last fetch, even a failed one
    lock: threading.Lock = field(default_factory=threading.Lock)

    def signing_key(self, kid: str) -> jwt.PyJWK:
        with self.lock:
            now = time.monotonic()
            if self._due(kid, now):
                self._fetch(now)
            key = self.keys.get(kid)
        if key is None:
            raise InvalidIdToken(f"no signing key for this token: unknown kid {kid[:64]!r}")
        return key

    def _due(self, kid: str, now: float) -> bool:
        if self.fetched_at is None or now - self.fetched_at > JWKS_CACHE_SECONDS:
            return True
        return kid not in self.keys and now - self.fetched_at >= JWKS_REFETCH_COOLDOWN_SECONDS

    def _fetch(self, now: float) -> None:
        self.fetched_at = now
        document = _get_json(self.url)
        try:
            key_set = jwt.PyJWKSet.from_dict(document)
        except (jwt.PyJWTError, TypeError, AttributeError) as exc:
            host = outbound.host_of(self.url)
            raise InvalidIdToken(f"no signing keys in the answer from {host}") from exc
        # As PyJWKClient: signing keys with a `kid` only.
        self.keys = {
            key.key_id: key
            for key in key_set.keys
            if key.key_id and key.public_key_use in (None, "sig")
        }


_jwks_clients: dict[str, _JwksClient] = {}


def _jwks_client(url: str) -> _JwksClient:
    with _lock:
        client = _jwks_clients.get(url)
        if client is None:
            client = _jwks_clients[url] = _JwksClient(url)
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
        metadata = _get_json(app.metadata_url)
    except InvalidIdToken as exc:
        raise InvalidIdToken(f"cannot read the tenant of {authority}: {exc}") from exc
    issuer = metadata.get("issuer") if isinstance(metadata, dict) else None
    parts = issuer.rstrip("/").split("/") if isinstance(issuer, str) else []
    tenant_id = parts[-2].lower() if len(parts) >= 2 else ""
    if not is_guid(tenant_id):
        raise InvalidIdToken(f"the metadata of {authority} names no tenant GUID in its issuer")
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
    kid = jwt.get_unverified_header(id_token).get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidIdToken("no signing key for this token: its header names no kid")
    signing_key = _jwks_client(app.jwks_url).signing_key(kid)
    try:
        claims = jwt.decode(
            id_token,
            signing_key.key,
            algorithms=["RS256"],
            audience=app.client_id,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "aud", "iss", "tid", "oid", "sub", "nonce"]},
        )
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
