"""Load a scenario (JSON) into a World: tenants, users, groups, apps, consents and settings."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from emulator.directory import App, Certificate, Tenant, User, new_guid, new_secret, thumbprint_of
from emulator.generate import FIRST, LAST, iso
from emulator.world import Settings, World


class ScenarioError(ValueError):
    pass


def parse_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def stable_guid(seed: int, *names: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"emulator:{seed}:" + "/".join(names)))


def load(spec: dict[str, Any]) -> World:
    world = World(int(spec.get("seed", 1)), parse_time(spec.get("base_time")))
    apply_settings(world.settings, spec.get("settings", {}))
    for tenant_spec in spec.get("tenants", []):
        add_tenant(world, tenant_spec)
    for app_spec in spec.get("apps", []):
        add_app(world, app_spec)
    for consent in spec.get("consents", []):
        add_consent(world, consent)
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
        is_admin=bool(spec.get("admin", False)),
        data=dict(spec.get("data", {})),
    )
    for attr in ("job_title", "office_location", "mobile_phone", "preferred_language"):
        if attr in spec:
            setattr(user, attr, spec[attr])
    if spec.get("mfa_required"):
        user.mfa_required_since = 0.0
    return world.add_user(user)


def group_item(world: World, tenant_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    tenant = world.directory.tenants[tenant_id]
    name = spec.get("display_name") or spec.get("displayName") or "Group"
    members = []
    for ref in spec.get("members", []):
        user = world.directory.find_user(ref)
        if user is None:
            raise ScenarioError(f"group member {ref!r} is not a user")
        members.append(user.id)
    nick = "".join(ch for ch in name.lower() if ch.isalnum())
    return {
        "createdDateTime": iso(world.base_time - 86400 * 90),
        "description": spec.get("description", f"{name} team"),
        "displayName": name,
        "groupTypes": spec.get("group_types", ["Unified"]),
        "mail": f"{nick}@{tenant.domain}",
        "mailEnabled": True,
        "mailNickname": nick,
        "securityEnabled": False,
        "_members": members,
    }


def add_group(world: World, tenant_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    item = group_item(world, tenant_id, spec)
    group_id = spec.get("id") or stable_guid(world.seed, "group", tenant_id, item["displayName"])
    return world.groups_collection(tenant_id).add(item, item_id=group_id)


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
