"""Load a scenario (JSON) into a World: tenants, users, groups, apps, consents and settings."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from emulator.directory import (
    AccessPolicy,
    App,
    Certificate,
    Tenant,
    User,
    new_guid,
    new_secret,
    stable_guid,
    thumbprint_of,
)
from emulator.generate import FIRST, LAST
from emulator.groups import add_group, find_group
from emulator.population import populate
from emulator.world import Settings, World


class ScenarioError(ValueError):
    pass


def parse_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def load(spec: dict[str, Any]) -> World:
    world = World(int(spec.get("seed", 1)), parse_time(spec.get("base_time")))
    apply_settings(world.settings, spec.get("settings", {}))
    for tenant_spec in spec.get("tenants", []):
        add_tenant(world, tenant_spec)
    for app_spec in spec.get("apps", []):
        add_app(world, app_spec)
    for consent in spec.get("consents", []):
        add_consent(world, consent)
    for policy in spec.get("access_policies", []):
        set_access_policy(world, policy["client_id"], policy)
    return world


def apply_settings(settings: Settings, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if key == "refresh_rotation":
            check_rotation(value)
        if not hasattr(settings, key) or key == "token_outage":
            raise ScenarioError(f"unknown setting {key!r}")
        setattr(settings, key, value)


def check_rotation(policy: str) -> None:
    if policy in ("microsoft", "reuse_detection"):
        return
    if policy.startswith("grace:"):
        try:
            float(policy.split(":", 1)[1])
            return
        except ValueError:
            pass
    raise ScenarioError(
        f"refresh_rotation must be microsoft, grace:<seconds> or reuse_detection, not {policy!r}"
    )


def add_tenant(world: World, spec: dict[str, Any]) -> Tenant:
    domain = spec.get("domain") or "tenant.example"
    tenant_id = spec.get("id") or stable_guid(world.seed, "tenant", domain)
    tenant = world.directory.add_tenant(Tenant(tenant_id, domain, spec.get("name", domain)))
    world.users_collection(tenant_id)
    world.groups_collection(tenant_id)
    for user_spec in spec.get("users", []):
        add_user(world, tenant_id, user_spec)
    for n in range(int(spec.get("extra_users", 0))):
        first, last = FIRST[n % len(FIRST)], LAST[(n // len(FIRST)) % len(LAST)]
        add_user(
            world,
            tenant_id,
            {
                "upn": f"{first}.{last}{n}@{domain}".lower(),
                "display_name": f"{first} {last}",
                "given_name": first,
                "surname": last,
                "mailbox": False,
            },
        )
    if spec.get("population"):
        populate(world, tenant_id, spec["population"])
    for group_spec in spec.get("groups", []):
        add_group(world, tenant_id, group_spec)
    return tenant


def add_user(world: World, tenant_id: str, spec: dict[str, Any]) -> User:
    tenant = world.directory.tenants.get(tenant_id)
    if tenant is None:
        raise ScenarioError(f"tenant {tenant_id} does not exist")
    upn = spec.get("upn") or spec.get("userPrincipalName")
    if not upn:
        raise ScenarioError("a user needs a upn")
    if "@" not in upn:
        upn = f"{upn}@{tenant.domain}"
    local = upn.split("@")[0]
    given = spec.get("given_name", local.split(".")[0].title())
    surname = spec.get("surname", local.split(".")[-1].title() if "." in local else "")
    user = User(
        id=spec.get("id") or stable_guid(world.seed, "user", upn.lower()),
        tenant_id=tenant_id,
        upn=upn,
        display_name=spec.get("display_name", f"{given} {surname}".strip()),
        given_name=given,
        surname=surname,
        mailbox=bool(spec.get("mailbox", True)),
        mailbox_inactive=bool(spec.get("mailbox_inactive", False)),
        account_enabled=bool(spec.get("account_enabled", True)),
        is_admin=bool(spec.get("admin", False)),
        data=dict(spec.get("data", {})),
    )
    for attr in (
        "job_title",
        "office_location",
        "mobile_phone",
        "preferred_language",
        "department",
    ):
        if attr in spec:
            setattr(user, attr, spec[attr])
    if spec.get("mfa_required"):
        user.mfa_required_since = 0.0
    return world.add_user(user)


def certificate(pem: str, thumbprint: str | None = None) -> Certificate:
    data = pem.encode()
    if b"CERTIFICATE" in data:
        cert = x509.load_pem_x509_certificate(data)
        der = cert.public_bytes(serialization.Encoding.DER)
        return Certificate(
            thumbprint or thumbprint_of(der), cert.public_key(), thumbprint_of(der, "sha256")
        )
    if not thumbprint:
        raise ScenarioError("a bare public key needs a thumbprint (the x5t of its certificate)")
    return Certificate(thumbprint, serialization.load_pem_public_key(data))


def add_app(world: World, spec: dict[str, Any]) -> App:
    home = spec.get("home_tenant") or next(iter(world.directory.tenants), "")
    app = App(
        client_id=spec.get("client_id") or new_guid(),
        name=spec.get("name", "App"),
        home_tenant=home,
        multi_tenant=bool(spec.get("multi_tenant", True)),
        redirect_uris=list(spec.get("redirect_uris", [])),
        application_permissions=list(spec.get("application_permissions", [])),
        public_client=bool(spec.get("public_client", False)),
        id_token_amr=bool(spec.get("id_token_amr", False)),
    )
    for secret_spec in spec.get("secrets", []):
        app.secrets.append(make_secret(secret_spec))
    for cert_spec in spec.get("certificates", []):
        app.certificates.append(certificate(cert_spec["pem"], cert_spec.get("thumbprint")))
    return world.directory.add_app(app)


def make_secret(spec: dict[str, Any]):
    expires_at = parse_time(spec.get("expires_at"))
    if spec.get("expires_in") is not None:
        expires_at = time.time() + float(spec["expires_in"])
    secret = new_secret(value=spec.get("value"))
    secret.expires_at = expires_at
    if spec.get("id"):
        secret.id = spec["id"]
    return secret


def add_consent(world: World, spec: dict[str, Any]) -> None:
    tenant = world.directory.find_tenant(spec["tenant"])
    if tenant is None:
        raise ScenarioError(f"consent names unknown tenant {spec['tenant']!r}")
    user_id = None
    if not spec.get("admin"):
        user = world.directory.find_user(spec["user"])
        if user is None:
            raise ScenarioError(f"consent names unknown user {spec['user']!r}")
        user_id = user.id
    scopes = set(spec.get("scopes") or [])
    app = world.directory.apps.get(spec["client_id"])
    if user_id is None and not scopes and app is not None:
        scopes = set(app.application_permissions)  # admin consent grants what the app asks for
    world.directory.grant(tenant.id, spec["client_id"], user_id, scopes)


def set_access_policy(world: World, client_id: str, spec: dict[str, Any]) -> dict[str, Any] | None:
    """An Exchange application access policy for the app: `deny` (mailboxes closed to it) or
    `restrict_to` (the only mailboxes open to it), each a list of user ids or UPNs and group ids
    or mail addresses, all in one tenant (`tenant`, id or domain, when the list is empty). It
    replaces the app's policy in that tenant; neither list removes the app's policy (in `tenant`,
    else in every tenant)."""
    directory = world.directory
    if "deny" in spec and "restrict_to" in spec:
        raise ScenarioError("give deny or restrict_to, not both")
    tenant_ids: set[str] = set()
    if spec.get("tenant"):
        tenant = directory.find_tenant(spec["tenant"])
        if tenant is None:
            raise ScenarioError(f"unknown tenant {spec['tenant']!r}")
        tenant_ids.add(tenant.id)
    mode = "deny" if "deny" in spec else "restrict" if "restrict_to" in spec else None
    if mode is None:
        for key in list(directory.access_policies):
            if key[1] == client_id and (not tenant_ids or key[0] in tenant_ids):
                del directory.access_policies[key]
        return None
    users: set[str] = set()
    groups: set[str] = set()
    for ref in spec["deny" if mode == "deny" else "restrict_to"]:
        user = directory.find_user(str(ref))
        group = None if user else find_group(world, str(ref))
        if user is not None:
            users.add(user.id)
            tenant_ids.add(user.tenant_id)
        elif group is not None:
            groups.add(group[1])
            tenant_ids.add(group[0])
        else:
            raise ScenarioError(f"unknown user or group {ref!r}")
    if len(tenant_ids) != 1:
        raise ScenarioError("a policy lives in one tenant: list one tenant's mailboxes, or give it")
    policy = AccessPolicy(tenant_ids.pop(), mode, users, groups)
    directory.access_policies[(policy.tenant_id, client_id)] = policy
    return policy.public()
