"""The running emulator: one World plus the services that act on it."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from typing import Any

from emulator import scenario
from emulator.subscriptions import Subscriptions
from emulator.throttling import Throttle
from emulator.tokens import Grant, Tokens


class Emulator:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.login_base = ""
        self.graph_base = ""
        self.load(spec)

    def load(self, spec: dict[str, Any]) -> None:
        """Replace the whole state with a scenario's (keys survive: clients keep their JWKS)."""
        old_keys = getattr(self, "world", None) and self.world.keys
        old_subs = getattr(self, "subscriptions", None)
        world = scenario.load(spec)
        throttle = Throttle(world)
        throttle.configure(spec.get("throttling", {}))
        if old_keys:
            world.keys = old_keys
        world.login_base, world.graph_base = self.login_base, self.graph_base
        self.world = world
        self.tokens = Tokens(world)
        self.throttle = throttle
        self.subscriptions = Subscriptions(self)
        if old_subs is not None:
            old_subs.close()
        world.store.listeners.append(self.subscriptions.on_change)

    def set_bases(self, login_base: str, graph_base: str) -> None:
        self.login_base, self.graph_base = login_base, graph_base
        self.world.login_base, self.world.graph_base = login_base, graph_base

    def issuer(self, tenant_id: str) -> str:
        return f"{self.login_base}/{tenant_id}/v2.0"

    def id_token(self, grant: Grant, nonce: str | None) -> str:
        user = self.world.directory.find_user(grant.user_id)
        assert user is not None
        now = int(time.time())
        # `sub` is pairwise: the same user has a different sub in every app.
        pairwise = hashlib.sha256(f"{user.id}:{grant.client_id}".encode()).digest()
        claims: dict[str, Any] = {
            "aud": grant.client_id,
            "iss": self.issuer(grant.tenant_id),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": user.display_name,
            "oid": user.id,
            "preferred_username": user.upn,
            "rh": "0.AAAA" + base64.urlsafe_b64encode(pairwise[:12]).decode().rstrip("="),
            "sub": base64.urlsafe_b64encode(pairwise).decode().rstrip("="),
            "tid": grant.tenant_id,
            "uti": base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="),
            "ver": "2.0",
        }
        if user.mail:
            claims["email"] = user.mail
        app = self.world.directory.apps.get(grant.client_id)
        if app is not None and app.id_token_amr:
            claims["amr"] = ["pwd", "mfa"] if grant.mfa_at else ["pwd"]
        if nonce:
            claims["nonce"] = nonce
        return self.world.keys.sign(claims)
