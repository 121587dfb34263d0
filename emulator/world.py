"""The emulator's whole state: directory, mail/calendar/contacts/drive data, tokens and policies."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

from emulator.directory import Directory, Tenant, User
from emulator.generate import (
    ContactKind,
    DirectoryKind,
    DriveItemKind,
    EventKind,
    MessageKind,
    Owner,
    outlook_prefix,
)
from emulator.keys import KeyRing
from emulator.store import Collection, Store

MESSAGE = MessageKind()
EVENT = EventKind()
CONTACT = ContactKind()
DRIVE_ITEM = DriveItemKind()
USER_KIND = DirectoryKind("#microsoft.graph.user")
GROUP_KIND = DirectoryKind("#microsoft.graph.group")

# Well-known mail folder names and how the scenario's `data` keys fill them.
MAIL_FOLDERS = {"inbox": ("Inbox", "messages"), "sentitems": ("Sent Items", "sent_messages")}


@dataclass
class Outage:
    status: int = 503
    remaining: int | None = None
    until: float | None = None
    error: str = "temporarily_unavailable"
    retry_after: float | None = None

    def active(self, now: float) -> bool:
        if self.until is not None and now >= self.until:
            return False
        return self.remaining is None or self.remaining > 0


@dataclass
class Settings:
    access_token_lifetime: float | None = None  # None: random 60-90 minutes, as Microsoft
    refresh_rotation: str = "microsoft"  # microsoft | grace:<seconds> | reuse_detection
    code_lifetime: float = 600
    token_latency_ms: float = 0
    graph_latency_ms: float = 0
    token_outage: Outage | None = None
    validation_timeout: float = 10


@dataclass
class Mailbox:
    owner: User
    folders: dict[str, Collection] = field(default_factory=dict)  # by well-known name
    events: Collection | None = None
    contacts: Collection | None = None  # the default Contacts folder
    drive: Collection | None = None
    folder_ids: dict[str, str] = field(default_factory=dict)  # mail folder id -> well-known name
    drive_id: str = ""
    # Every contact folder by id, the default one included, and the display names of all.
    contact_folders: dict[str, Collection] = field(default_factory=dict)
    contact_folder_names: dict[str, str] = field(default_factory=dict)
    contacts_folder_id: str = ""
    # Where the default Contacts folder hangs (the mailbox's root, never listed by Graph).
    root_folder_id: str = ""


class World:
    def __init__(self, seed: int = 1, base_time: float | None = None) -> None:
        self.seed = seed
        self.base_time = base_time if base_time is not None else time.time()
        self.directory = Directory()
        self.store = Store(time.time)
        self.settings = Settings()
        self.keys = KeyRing()
        self.mailboxes: dict[str, Mailbox] = {}
        self.tenant_users: dict[str, Collection] = {}
        self.tenant_groups: dict[str, Collection] = {}
        self.login_base = ""
        self.graph_base = ""
        self.request_log: collections.deque[dict[str, Any]] = collections.deque(maxlen=20000)
        self.invalid_delta_tokens: set[str] = set()

    # directory collections

    def users_collection(self, tenant_id: str) -> Collection:
        coll = self.tenant_users.get(tenant_id)
        if coll is None:
            coll = Collection(self.store, f"t:{tenant_id}:users", USER_KIND, "user-")
            self.tenant_users[tenant_id] = self.store.register(coll)
        return coll

    def groups_collection(self, tenant_id: str) -> Collection:
        coll = self.tenant_groups.get(tenant_id)
        if coll is None:
            coll = Collection(self.store, f"t:{tenant_id}:groups", GROUP_KIND, "group-")
            self.tenant_groups[tenant_id] = self.store.register(coll)
        return coll

    def add_user(self, user: User) -> User:
        self.directory.add_user(user)
        self.users_collection(user.tenant_id).add(user.graph(), item_id=user.id)
        return user

    def tenant_of(self, user: User) -> Tenant:
        return self.directory.tenants[user.tenant_id]

    def groups_of(self, user: User) -> set[str]:
        """Ids of the groups the user is a direct member of."""
        coll = self.groups_collection(user.tenant_id)
        groups, _ = coll.scan(0, coll.total)
        return {g["id"] for g in groups if user.id in g.get("_members", ())}

    def app_may_open(self, client_id: str, user: User) -> bool:
        """Whether the Exchange application access policy of the user's tenant lets the app's
        app-only calls into the user's mailbox."""
        policy = self.directory.access_policies.get((user.tenant_id, client_id))
        if policy is None:
            return True
        return policy.allows(user.id, self.groups_of(user) if policy.group_ids else set())

    # mailboxes, created on first use so that big scenarios load instantly

    def mailbox(self, user: User) -> Mailbox:
        box = self.mailboxes.get(user.id)
        if box is not None:
            return box
        box = Mailbox(user)
        tenant = self.tenant_of(user)
        data = user.data
        for name, (_, data_key) in MAIL_FOLDERS.items():
            folder_id = outlook_prefix(f"{user.id}/folder/{name}") + "AQAAAA=="
            owner = self._owner(user, tenant, folder_id)
            coll = Collection(
                self.store,
                f"u:{user.id}:mail:{name}",
                MESSAGE,
                outlook_prefix(f"{user.id}/mail/{name}"),
                int(data.get(data_key, 0)),
                owner,
            )
            box.folders[name] = self.store.register(coll)
            box.folder_ids[folder_id] = name
        box.events = self.store.register(
            Collection(
                self.store,
                f"u:{user.id}:events",
                EVENT,
                outlook_prefix(f"{user.id}/events"),
                int(data.get("events", 0)),
                self._owner(user, tenant, ""),
            )
        )
        box.root_folder_id = "AAMkADroot" + user.id[:8]
        box.contacts_folder_id = outlook_prefix(f"{user.id}/folder/contacts") + "AQAAAA=="
        box.contacts = self._contact_folder(
            box, box.contacts_folder_id, "Contacts", "contacts", int(data.get("contacts", 0))
        )
        # Subfolders of the default Contacts folder: {"display name": number of contacts}.
        for name, count in dict(data.get("contact_folders", {})).items():
            self.add_contact_folder(box, str(name), int(count))
        box.drive_id = "b!" + outlook_prefix(f"{user.id}/drive")[6:]
        files = int(data.get("files", 0))
        drive_owner = self._owner(user, tenant, "")
        drive_owner.drive_id = box.drive_id
        box.drive = self.store.register(
            Collection(
                self.store,
                f"u:{user.id}:drive",
                DRIVE_ITEM,
                "01" + outlook_prefix(f"{user.id}/drive")[6:16].upper(),
                files + 1 if files else 1,
                drive_owner,
            )
        )
        self.mailboxes[user.id] = box
        return box

    def _contact_folder(
        self, box: Mailbox, folder_id: str, name: str, id_key: str, count: int
    ) -> Collection:
        user = box.owner
        coll = self.store.register(
            Collection(
                self.store,
                f"u:{user.id}:contacts:{folder_id}",
                CONTACT,
                outlook_prefix(f"{user.id}/{id_key}"),
                count,
                self._owner(user, self.tenant_of(user), folder_id),
            )
        )
        box.contact_folders[folder_id] = coll
        box.contact_folder_names[folder_id] = name
        return coll

    def add_contact_folder(self, box: Mailbox, name: str, count: int = 0) -> str:
        """A subfolder of the default Contacts folder; returns its id."""
        folder_id = outlook_prefix(f"{box.owner.id}/contactfolder/{name}") + "AQAAAA=="
        if folder_id not in box.contact_folders:
            self._contact_folder(box, folder_id, name, f"contacts/{name}", count)
        return folder_id

    def contact_folder(self, box: Mailbox, ref: str) -> Collection | None:
        """A contact folder by id. Graph documents no well-known name for contact folders, so
        none is accepted (docs/microsoft.md, "Delta and resync")."""
        return box.contact_folders.get(ref.strip("'\""))

    def _owner(self, user: User, tenant: Tenant, folder_id: str) -> Owner:
        return Owner(
            user.id,
            user.display_name,
            user.upn,
            tenant.domain,
            self.seed,
            self.base_time,
            folder_id,
        )

    def folder_name(self, box: Mailbox, ref: str) -> str | None:
        """A mail folder by well-known name (any case) or by id."""
        ref = ref.strip("'\"")
        if ref.lower() in box.folders:
            return ref.lower()
        return box.folder_ids.get(ref)

    def folder_id(self, box: Mailbox, name: str) -> str:
        return next(fid for fid, n in box.folder_ids.items() if n == name)

    def log(self, entry: dict[str, Any]) -> None:
        self.request_log.append(entry)
