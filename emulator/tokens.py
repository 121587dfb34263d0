"""Authorization codes, access tokens, refresh-token families and the rotation policies."""

from __future__ import annotations

import base64
import collections
import hashlib
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from emulator.directory import User
from emulator.errors import AadError
from emulator.world import World


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    tenant_id: str
    user_id: str
    graph_scopes: list[str]
    oidc: list[str]
    nonce: str | None
    challenge: str | None
    challenge_method: str
    expires_at: float
    mfa_at: float | None
    redeemed: bool = False


@dataclass
class Grant:
    """One refresh-token family: born at a code redemption, dies with revocation."""

    id: str
    tenant_id: str
    user_id: str
    client_id: str
    graph_scopes: list[str]
    oidc: list[str]
    auth_time: float
    mfa_at: float | None
    nonce: str | None = None  # of the authorization request; only the first ID token has it
    revoked: str | None = None  # why, when revoked
    tokens: list[str] = field(default_factory=list)


@dataclass
class RefreshToken:
    token: str
    grant_id: str
    issued_at: float
    rotated_at: float | None = None


@dataclass
class AccessToken:
    token: str
    tenant_id: str
    user_id: str | None
    client_id: str
    scopes: list[str]
    roles: list[str]
    expires_at: float
    issued_at: float

    def public(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "client_id": self.client_id,
            "scopes": self.scopes,
            "roles": self.roles,
            "expires_at": self.expires_at,
        }


def invalid_grant(code: int, message: str, suberror: str | None = None) -> AadError:
    return AadError("invalid_grant", code, message, suberror=suberror)


def pkce_matches(verifier: str, challenge: str, method: str) -> bool:
    if method.lower() == "plain":
        return secrets.compare_digest(verifier, challenge)
    digest = hashlib.sha256(verifier.encode()).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return secrets.compare_digest(expected, challenge)


class Tokens:
    def __init__(self, world: World) -> None:
        self.world = world
        self.codes: dict[str, AuthCode] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.grants: dict[str, Grant] = {}
        self.requests: collections.Counter[tuple[str, str, str]] = collections.Counter()

    # codes

    def new_code(self, **fields: Any) -> AuthCode:
        code = AuthCode(
            code="1.A" + secrets.token_urlsafe(96),
            expires_at=time.time() + self.world.settings.code_lifetime,
            **fields,
        )
        self.codes[code.code] = code
        return code

    def redeem(
        self, client_id: str, code_value: str, redirect_uri: str, verifier: str | None
    ) -> Grant:
        code = self.codes.get(code_value)
        if code is None:
            raise invalid_grant(9002313, "Invalid request. Request is malformed or invalid.")
        if code.redeemed:
            raise invalid_grant(
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new "
                "valid code or use an existing refresh token.",
            )
        if time.time() > code.expires_at:
            raise invalid_grant(
                70008,
                "The provided authorization code or refresh token has expired due to "
                "inactivity. Send a new interactive authorization request for this user and "
                "resource.",
                "bad_token",
            )
        if code.client_id != client_id:
            raise invalid_grant(
                70000,
                "The provided value for the 'code' parameter is not "
                "valid. The code was issued to a different client.",
            )
        if code.redirect_uri != redirect_uri:
            raise invalid_grant(
                50011,
                f"The redirect URI '{redirect_uri}' specified in the request does not "
                "match the redirect URI used in the authorization request.",
            )
        if code.challenge and (
            not verifier or not pkce_matches(verifier, code.challenge, code.challenge_method)
        ):
            raise invalid_grant(
                50148,
                "The code_verifier does not match the code_challenge "
                "supplied in the authorization request for PKCE.",
            )
        code.redeemed = True
        grant = Grant(
            id=secrets.token_hex(8),
            tenant_id=code.tenant_id,
            user_id=code.user_id,
            client_id=client_id,
            graph_scopes=code.graph_scopes,
            oidc=code.oidc,
            auth_time=time.time(),
            mfa_at=code.mfa_at,
            nonce=code.nonce,
        )
        self.grants[grant.id] = grant
        return grant

    # refresh tokens and rotation

    def new_refresh(self, grant: Grant) -> str:
        token = "1.AR" + secrets.token_urlsafe(180)
        self.refresh[token] = RefreshToken(token, grant.id, time.time())
        grant.tokens.append(token)
        return token

    def use_refresh(self, client_id: str, token: str) -> tuple[Grant, RefreshToken]:
        found = self.refresh.get(token)
        if found is None:
            raise invalid_grant(9002313, "Invalid request. Request is malformed or invalid.")
        grant = self.grants[found.grant_id]
        if grant.client_id != client_id:
            raise invalid_grant(
                70000,
                "The provided value for the 'refresh_token' is not "
                "valid. The refresh token was issued to a different client.",
            )
        if grant.revoked:
            raise invalid_grant(
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth "
                "token is needed. The user might have changed or reset their password. "
                f"({grant.revoked})",
            )
        self._check_rotation(grant, found)
        user = self.world.directory.find_user(grant.user_id)
        if user is None:
            raise invalid_grant(70000, "The user account no longer exists in the directory.")
        self.check_mfa(user, grant.mfa_at)
        return grant, found

    def _check_rotation(self, grant: Grant, token: RefreshToken) -> None:
        if token.rotated_at is None:
            return
        policy = self.world.settings.refresh_rotation
        if policy == "microsoft":
            return  # Microsoft leaves rotated refresh tokens valid.
        if policy.startswith("grace:"):
            if time.time() - token.rotated_at <= float(policy.split(":", 1)[1]):
                return
            raise invalid_grant(
                70000,
                "The provided value for the 'refresh_token' is not valid: "
                "it was replaced by a newer refresh token.",
                "bad_token",
            )
        grant.revoked = "a rotated refresh token was replayed"
        raise invalid_grant(
            70000,
            "The provided value for the 'refresh_token' is not valid: a "
            "rotated refresh token was replayed, so the whole grant is revoked.",
            "bad_token",
        )

    def rotate(self, grant: Grant, old: RefreshToken) -> str:
        old.rotated_at = old.rotated_at or time.time()
        return self.new_refresh(grant)

    def check_mfa(self, user: User, mfa_at: float | None) -> None:
        since = user.mfa_required_since
        if since is None or (mfa_at is not None and mfa_at >= since):
            return
        raise AadError(
            user.mfa_error,
            50076,
            "Due to a configuration change made by your administrator, "
            "or because you moved to a new location, you must use multi-factor authentication "
            "to access '00000003-0000-0000-c000-000000000000'.",
            suberror="basic_action",
        )

    def revoke_user(
        self, tenant_id: str, user_id: str, client_id: str | None, access_too: bool = False
    ) -> int:
        count = 0
        for grant in self.grants.values():
            if grant.user_id == user_id and client_id in (None, grant.client_id):
                grant.revoked = grant.revoked or "revoked by an administrator"
                count += 1
        if access_too:
            for token, at in list(self.access.items()):
                if at.user_id == user_id and client_id in (None, at.client_id):
                    del self.access[token]
        return count

    # access tokens

    def lifetime(self) -> int:
        configured = self.world.settings.access_token_lifetime
        return int(configured) if configured is not None else random.randint(3600, 5400)

    def new_access(
        self,
        tenant_id: str,
        user_id: str | None,
        client_id: str,
        scopes: list[str],
        roles: list[str],
    ) -> AccessToken:
        now = time.time()
        expires_at = now + self.lifetime()
        if user_id is None:
            # An app-only token for Graph is a JWT whose `roles` claim lists the application
            # permissions granted (clients may read it; Graph checks the signature).
            value = self.world.keys.sign(
                {
                    "aud": "https://graph.microsoft.com",
                    "iss": f"https://sts.windows.net/{tenant_id}/",
                    "iat": int(now),
                    "nbf": int(now),
                    "exp": int(expires_at),
                    "appid": client_id,
                    "tid": tenant_id,
                    "roles": list(roles),
                    "idtyp": "app",
                    "uti": secrets.token_urlsafe(16),
                }
            )
        else:
            value = "EwA" + secrets.token_urlsafe(90)
        token = AccessToken(
            value,
            tenant_id,
            user_id,
            client_id,
            scopes,
            roles,
            expires_at,
            now,
        )
        self.access[token.token] = token
        self._sweep(now)
        return token

    def _sweep(self, now: float) -> None:
        if len(self.access) > 50_000:
            for key in [k for k, v in self.access.items() if v.expires_at < now - 3600]:
                del self.access[key]

    def lookup(self, token: str) -> AccessToken | None:
        return self.access.get(token)

    def user_of(self, form: dict[str, str]) -> str:
        """The user a token request is about, for the counters (before any validation)."""
        code = self.codes.get(form.get("code", ""))
        if code is not None:
            return code.user_id
        refresh = self.refresh.get(form.get("refresh_token", ""))
        if refresh is not None:
            return self.grants[refresh.grant_id].user_id
        return ""

    def count(self, client_id: str, grant_type: str, user_id: str = "") -> None:
        self.requests[(client_id, grant_type, user_id)] += 1

    def request_counts(self) -> list[dict[str, Any]]:
        return [
            {"client_id": c, "grant_type": g, "user_id": u or None, "count": n}
            for (c, g, u), n in sorted(self.requests.items())
        ]
