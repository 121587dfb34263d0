"""Tenants, users and app registrations: who may sign in, and which apps they may sign in to."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
CONSUMERS_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
MULTI_TENANT_ALIASES = ("common", "organizations", "consumers")


@dataclass
class Secret:
    id: str
    value: str
    expires_at: float | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "hint": self.value[:3], "expires_at": self.expires_at}


@dataclass
class Certificate:
    thumbprint: str  # base64url SHA-1 of the DER certificate: the `x5t` of client assertions
    public_key: Any
    # base64url SHA-256 of the DER certificate: the `x5t#S256` Microsoft recommends over `x5t`
    thumbprint_s256: str | None = None


@dataclass
class App:
    client_id: str
    name: str
    home_tenant: str
    multi_tenant: bool = True
    redirect_uris: list[str] = field(default_factory=list)
    secrets: list[Secret] = field(default_factory=list)
    certificates: list[Certificate] = field(default_factory=list)
    application_permissions: list[str] = field(default_factory=list)
    public_client: bool = False

    def public(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "name": self.name,
            "home_tenant": self.home_tenant,
            "multi_tenant": self.multi_tenant,
            "redirect_uris": self.redirect_uris,
            "secrets": [s.public() for s in self.secrets],
            "certificates": [c.thumbprint for c in self.certificates],
            "application_permissions": self.application_permissions,
        }


@dataclass
class User:
    id: str
    tenant_id: str
    upn: str
    display_name: str
    given_name: str
    surname: str
    mailbox: bool = True
    account_enabled: bool = True
    is_admin: bool = False
    job_title: str = "Consultant"
    office_location: str = "18/2111"
    mobile_phone: str = "+1 425 555 0100"
    business_phones: list[str] = field(default_factory=lambda: ["+1 425 555 0109"])
    preferred_language: str = "en-US"
    data: dict[str, Any] = field(default_factory=dict)
    # MFA demanded since this moment: sign-ins older than it fail with AADSTS50076.
    mfa_required_since: float | None = None
    mfa_error: str = "interaction_required"

    @property
    def mail(self) -> str | None:
        return self.upn if self.mailbox else None

    def graph(self) -> dict[str, Any]:
        return {
            "businessPhones": list(self.business_phones),
            "displayName": self.display_name,
            "givenName": self.given_name,
            "jobTitle": self.job_title,
            "mail": self.mail,
            "mobilePhone": self.mobile_phone,
            "officeLocation": self.office_location,
            "preferredLanguage": self.preferred_language,
            "surname": self.surname,
            "userPrincipalName": self.upn,
            "accountEnabled": self.account_enabled,
            "id": self.id,
        }


@dataclass
class Tenant:
    id: str
    domain: str
    name: str
    users: dict[str, User] = field(default_factory=dict)


@dataclass
class Consent:
    """A delegated grant (user + app) or, with user_id None, an admin consent for the tenant."""

    tenant_id: str
    client_id: str
    user_id: str | None
    scopes: set[str] = field(default_factory=set)
    revoked: bool = False


class DirectoryError(Exception):
    pass


@dataclass
class AccessPolicy:
    """Exchange's application access policy for one app (RBAC for Applications looks the same to
    a caller): DenyAccess closes the listed mailboxes to its app-only calls, RestrictAccess
    opens only the listed ones. Outlook resources only (mail, calendar, contacts)."""

    mode: str  # "deny" or "restrict"
    user_ids: set[str]

    def allows(self, user_id: str) -> bool:
        listed = user_id in self.user_ids
        return not listed if self.mode == "deny" else listed


class Directory:
    def __init__(self) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.apps: dict[str, App] = {}
        self.consents: dict[tuple[str, str, str | None], Consent] = {}
        self.access_policies: dict[str, AccessPolicy] = {}  # by client id

    # tenants and users

    def add_tenant(self, tenant: Tenant) -> Tenant:
        self.tenants[tenant.id] = tenant
        return tenant

    def find_tenant(self, ref: str) -> Tenant | None:
        ref_l = ref.lower()
        for tenant in self.tenants.values():
            if ref_l in (tenant.id.lower(), tenant.domain.lower()):
                return tenant
        return None

    def add_user(self, user: User) -> User:
        tenant = self.tenants.get(user.tenant_id)
        if tenant is None:
            raise DirectoryError(f"tenant {user.tenant_id} does not exist")
        tenant.users[user.id] = user
        return user

    def find_user(self, ref: str) -> User | None:
        ref_l = ref.lower()
        for tenant in self.tenants.values():
            user = tenant.users.get(ref)
            if user is not None:
                return user
            for candidate in tenant.users.values():
                if candidate.upn.lower() == ref_l:
                    return candidate
        return None

    def all_users(self) -> list[User]:
        return [u for t in self.tenants.values() for u in t.users.values()]

    # apps and credentials

    def add_app(self, app: App) -> App:
        self.apps[app.client_id] = app
        return app

    def app_visible_in(self, app: App, tenant_id: str) -> bool:
        """AADSTS700016 unless the app lives in the tenant or the tenant has consented to it."""
        if app.home_tenant == tenant_id:
            return True
        if not app.multi_tenant:
            return False
        return any(
            c.tenant_id == tenant_id and c.client_id == app.client_id and not c.revoked
            for c in self.consents.values()
        )

    # consent

    def consent(self, tenant_id: str, client_id: str, user_id: str | None) -> Consent | None:
        found = self.consents.get((tenant_id, client_id, user_id))
        if found is None or found.revoked:
            return None
        return found

    def grant(
        self, tenant_id: str, client_id: str, user_id: str | None, scopes: set[str]
    ) -> Consent:
        key = (tenant_id, client_id, user_id)
        found = self.consents.get(key)
        if found is None or found.revoked:
            found = Consent(tenant_id, client_id, user_id, set())
            self.consents[key] = found
        found.scopes |= scopes
        return found

    def revoke(self, tenant_id: str, client_id: str, user_id: str | None) -> bool:
        found = self.consents.get((tenant_id, client_id, user_id))
        if found is None:
            return False
        found.revoked = True
        return True


def new_guid() -> str:
    return str(uuid.uuid4())


def new_secret(expires_in: float | None = None, value: str | None = None) -> Secret:
    # Real secrets are 40 characters with a `~` in them; some clients trip on it in Basic auth.
    value = value or secrets.token_urlsafe(27)[:36] + "~" + secrets.token_hex(2)[:3]
    expires_at = time.time() + expires_in if expires_in is not None else None
    return Secret(new_guid(), value, expires_at)


def thumbprint_of(der: bytes, algorithm: str = "sha1") -> str:
    digest = hashlib.new(algorithm, der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
