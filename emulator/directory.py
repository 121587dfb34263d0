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
    # Microsoft's v2.0 ID tokens carry no `amr`; a tenant that maps it in (claims mapping)
    # gets ["pwd"], with "mfa" after a multi-factor sign-in. Off, as Microsoft's default.
    id_token_amr: bool = False

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
            "id_token_amr": self.id_token_amr,
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
    # A mailbox made inactive or soft-deleted (a licence removed, a litigation hold): `mail`
    # stays, the items are kept, Outlook calls answer 404 MailboxNotEnabledForRESTAPI.
    mailbox_inactive: bool = False
    account_enabled: bool = True
    is_admin: bool = False
    job_title: str = "Consultant"
    department: str | None = None
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

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "upn": self.upn,
            "display_name": self.display_name,
            "mailbox": self.mailbox,
            "mailbox_inactive": self.mailbox_inactive,
            "account_enabled": self.account_enabled,
            "admin": self.is_admin,
            "department": self.department,
        }

    @property
    def outlook_enabled(self) -> bool:
        return self.mailbox and not self.mailbox_inactive

    def graph(self) -> dict[str, Any]:
        """The user as Graph has it: the default properties, and under `_extra` those Graph
        returns only when `$select` names them (`paging.project`)."""
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
            "id": self.id,
            "_extra": {"accountEnabled": self.account_enabled, "department": self.department},
        }


@dataclass
class Tenant:
    id: str
    domain: str
    name: str
    users: dict[str, User] = field(default_factory=dict)
    generated_users: int = 0  # how many `population` has added: the next one's number


@dataclass
class Consent:
    """A delegated grant (user + app) or, with user_id None, an admin consent for the tenant."""

    tenant_id: str
    client_id: str
    user_id: str | None
    scopes: set[str] = field(default_factory=set)
    revoked: bool = False


class DirectoryError(ValueError):
    pass


@dataclass
class AccessPolicy:
    """Exchange's application access policy for one app in one tenant's Exchange organisation
    (RBAC for Applications looks the same to a caller): DenyAccess closes the listed mailboxes
    to the app's app-only calls, RestrictAccess opens only the listed ones. Mailboxes are listed
    one by one or through groups, whose membership counts as it is at each call (Exchange's
    `PolicyScopeGroupId` is a mail-enabled security group). Outlook resources only."""

    tenant_id: str
    mode: str  # "deny" or "restrict"
    user_ids: set[str]
    group_ids: set[str] = field(default_factory=set)

    def allows(self, user_id: str, groups: set[str]) -> bool:
        listed = user_id in self.user_ids or bool(self.group_ids & groups)
        return not listed if self.mode == "deny" else listed

    def public(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant_id,
            "mode": self.mode,
            "users": sorted(self.user_ids),
            "groups": sorted(self.group_ids),
        }


class Directory:
    def __init__(self) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.apps: dict[str, App] = {}
        self.consents: dict[tuple[str, str, str | None], Consent] = {}
        # By (tenant id, client id): each tenant's Exchange organisation has its own.
        self.access_policies: dict[tuple[str, str], AccessPolicy] = {}
        # Lower-case UPN -> user: Graph paths and the control API name users by UPN, and a
        # generated tenant has thousands.
        self.by_upn: dict[str, User] = {}

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
        self.by_upn[user.upn.lower()] = user
        return user

    def remove_user(self, user: User) -> None:
        self.tenants[user.tenant_id].users.pop(user.id, None)
        if self.by_upn.get(user.upn.lower()) is user:
            del self.by_upn[user.upn.lower()]

    def find_user(self, ref: str) -> User | None:
        for tenant in self.tenants.values():
            user = tenant.users.get(ref)
            if user is not None:
                return user
        return self.by_upn.get(ref.lower())

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


def stable_guid(seed: int, *names: str) -> str:
    """The same GUID for the same seed and names: scenarios reload with the same ids."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"emulator:{seed}:" + "/".join(names)))


def new_secret(expires_in: float | None = None, value: str | None = None) -> Secret:
    # Real secrets are 40 characters with a `~` in them; some clients trip on it in Basic auth.
    value = value or secrets.token_urlsafe(27)[:36] + "~" + secrets.token_hex(2)[:3]
    expires_at = time.time() + expires_in if expires_in is not None else None
    return Secret(new_guid(), value, expires_at)


def thumbprint_of(der: bytes, algorithm: str = "sha1") -> str:
    digest = hashlib.new(algorithm, der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
