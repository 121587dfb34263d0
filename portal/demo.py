"""Demo data for `make run`: an operator, a demo tenant with an administrator and two members,
an app registration on the custom cloud pointing at the local emulator, and an API key for the
customer API. Idempotent: running it again keeps what is there (and the passwords and key
already printed)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from connections import apikeys
from connections.models import (
    ApiKey,
    ClientSecret,
    EntraApp,
    Membership,
    MicrosoftIdentity,
    Tenant,
)

# The emulator's demo scenario (emulator/scenarios/demo.json): its app and its tenant.
DEMO_CLIENT_ID = "3c9e6d1a-52b4-4f7e-8a1d-6b0c2e9f4a17"
DEMO_SECRET = "demo~secret.GraphportEmulator0123456789"
DEMO_MS_TENANT = "8a3f2b1c-4d5e-4f60-9a7b-1c2d3e4f5a6b"
DEMO_TENANT = "Contoso (demo)"
# The emulator's "Graphport sign-in (demo)" app: the platform's Sign in with Microsoft.
DEMO_SIGNIN_CLIENT_ID = "b6e1f0a2-3c4d-4e5f-9a6b-7c8d9e0f1a2b"
DEMO_SIGNIN_SECRET = "demo~signin.GraphportEmulator012345678"
# alex's login signs in with Microsoft as the emulator's Alex Wilber.
DEMO_ALEX = "0c7d8e9f-1a2b-4c3d-8e4f-5a6b7c8d9e0f"
LOGINS = (
    ("operator", None, None),
    ("contoso-admin", "admin", "Tenant administrator of Contoso (demo)"),
    ("megan", "member", "Member of Contoso (demo)"),
    ("alex", "member", "Member of Contoso (demo)"),
)


DEMO_KEY_NAME = "demo backend"


@dataclass
class Login:
    username: str
    password: str
    role: str


@dataclass
class Demo:
    logins: list[Login]
    api_key: str


def _passwords_file() -> Path:
    return settings.VAR_DIR / "demo-logins.json"


def _passwords() -> dict[str, str]:
    path = _passwords_file()
    known = json.loads(path.read_text()) if path.exists() else {}
    changed = False
    for username, _, _ in LOGINS:
        if username not in known:
            known[username] = secrets.token_urlsafe(9)
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=2))
        path.chmod(0o600)
    return known


def _demo_key(tenant: Tenant, known: dict[str, str]) -> str:
    """The demo tenant's API key: kept in the same file as the passwords (only its hash is in
    the database), made again if either was lost."""
    raw = known.get("api_key", "")
    if raw and ApiKey.objects.filter(key_hash=apikeys.digest(raw), revoked_at=None).exists():
        return raw
    _, raw = apikeys.issue(tenant, DEMO_KEY_NAME, write=True)
    path = _passwords_file()
    path.write_text(json.dumps({**known, "api_key": raw}, indent=2))
    path.chmod(0o600)
    return raw


@transaction.atomic
def load(login_url: str, graph_url: str) -> Demo:
    passwords = _passwords()
    users = get_user_model().objects
    tenant, _ = Tenant.objects.get_or_create(name=DEMO_TENANT)
    if not tenant.return_origins:  # connect sessions may come back to the portal itself
        tenant.return_origins = settings.PORTAL_BASE_URL
        tenant.save(update_fields=["return_origins"])
    if tenant.directory_id is None:  # the emulator's Contoso may join with Microsoft
        tenant.directory_id = DEMO_MS_TENANT
        tenant.join_policy = Tenant.JoinPolicy.DIRECTORY
        tenant.save(update_fields=["directory_id", "join_policy"])
    logins = []
    for username, role, label in LOGINS:
        user = users.filter(username=username).first()
        if user is None:
            user = users.create_user(
                username,
                f"{username}@example.com",
                passwords[username],
                is_staff=role in (None, "admin"),
                is_superuser=role is None,
            )
            if role:
                Membership.objects.create(user=user, tenant=tenant, role=role)
        logins.append(Login(username, passwords[username], label or "Operator (superuser)"))
        if username == "alex":
            MicrosoftIdentity.objects.get_or_create(
                ms_tenant_id=DEMO_MS_TENANT,
                ms_object_id=DEMO_ALEX,
                defaults={"user": user, "username": "alex.wilber@contoso.example"},
            )
    app, created = EntraApp.objects.get_or_create(
        tenant=tenant,
        client_id=DEMO_CLIENT_ID,
        defaults={
            "name": "Contoso Graph (emulator)",
            "directory_tenant_id": DEMO_MS_TENANT,
            "cloud": "custom",
            "login_base_url": login_url,
            "graph_base_url": graph_url,
            "authority": DEMO_MS_TENANT,
            "delegated_scopes": "User.Read Mail.Read Calendars.Read Contacts.Read Files.Read",
            "use_application_permissions": True,
        },
    )
    if created:
        ClientSecret.objects.create(
            app=app,
            description="emulator demo secret",
            value=DEMO_SECRET,
            hint=DEMO_SECRET[:3],
            expires_on=timezone.localdate() + timedelta(days=365),
        )
    else:  # the emulator's ports may have changed
        EntraApp.objects.filter(pk=app.pk).update(
            login_base_url=login_url, graph_base_url=graph_url
        )
    return Demo(logins, _demo_key(tenant, passwords))
