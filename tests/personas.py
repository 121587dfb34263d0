"""The people of the tests: an operator, two tenants each with an administrator and a member."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

from connections.models import ClientSecret, Connection, EntraApp, Membership, Tenant

PASSWORD = "correct-horse-battery-staple"


@dataclass
class TenantWorld:
    tenant: Tenant
    admin: object
    member: object
    app: EntraApp
    secret: ClientSecret
    connection: Connection


def make_user(username: str, *, staff=False, superuser=False, tenant=None, role=None):
    user = get_user_model().objects.create_user(
        username, f"{username}@example.com", PASSWORD, is_staff=staff, is_superuser=superuser
    )
    if tenant is not None:
        Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


def make_tenant_world(name: str, client_id: str, secret_value: str) -> TenantWorld:
    tenant = Tenant.objects.create(name=name)
    admin = make_user(f"{name.lower()}-admin", staff=True, tenant=tenant, role="admin")
    member = make_user(f"{name.lower()}-member", tenant=tenant, role="member")
    app = EntraApp.objects.create(
        tenant=tenant,
        name=f"{name} mail sync",
        client_id=client_id,
        authority="organizations",
        delegated_scopes="User.Read Mail.Read",
    )
    secret = ClientSecret.objects.create(
        app=app,
        description="primary",
        value=secret_value,
        hint=secret_value[:3],
        expires_on=timezone.localdate() + timedelta(days=200),
    )
    connection = Connection.objects.create(
        app=app,
        user=member,
        ms_tenant_id="11111111-1111-1111-1111-111111111111",
        ms_object_id=client_id[::-1][:36],
        display_name=f"{name} Member",
        user_principal_name=f"member@{name.lower()}.example",
        access_token=f"{name}-access-token-value",
        refresh_token=f"{name}-refresh-token-value",
        access_token_expires_at=timezone.now() + timedelta(hours=1),
    )
    return TenantWorld(tenant, admin, member, app, secret, connection)
