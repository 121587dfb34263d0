"""What each synced resource is: its first URL, page size, throttle scope, what a change
notification subscription for it watches, and how an item becomes a record (title, date,
change key) or a deletion."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings

from graphsync.models import Resource, SyncJob

# The message fields Graphport stores (docs/microsoft.md, "What Graphport stores"); $select
# keeps pages small.
MESSAGE_FIELDS = (
    "id,changeKey,createdDateTime,lastModifiedDateTime,receivedDateTime,sentDateTime,subject,"
    "bodyPreview,body,from,sender,toRecipients,ccRecipients,conversationId,internetMessageId,"
    "parentFolderId,isRead,isDraft,hasAttachments,importance,categories,webLink"
)
USER_FIELDS = (
    "id,displayName,givenName,surname,mail,userPrincipalName,jobTitle,officeLocation,"
    "mobilePhone,businessPhones,preferredLanguage"
)
GROUP_FIELDS = "id,displayName,description,mail,mailEnabled,securityEnabled,members"
CONTACT_FIELDS = (
    "id,changeKey,displayName,givenName,surname,emailAddresses,businessPhones,mobilePhone,"
    "companyName,jobTitle,lastModifiedDateTime"
)
DEFAULT_MAIL_FOLDERS = ("inbox", "sentitems")
EVERY_CHANGE = "created,updated,deleted"


@dataclass(frozen=True)
class Watch:
    """What a job's change-notification subscription watches, in Graph's own resource form."""

    resource: str
    change_types: str
    max_minutes: int  # the longest lifetime Microsoft allows for this resource


def _unwatched(job: SyncJob) -> Watch | None:
    return None


@dataclass(frozen=True)
class Spec:
    resource: str
    scope: str  # mailbox | directory | drive: the Graph throttling scope it counts against
    delegated_scopes: tuple[str, ...]  # any of these granted makes the job possible
    app_only: bool
    delta: bool
    first_url: Callable[[SyncJob, str], str]
    page_size: int = 0  # Prefer: odata.maxpagesize, when > 0
    title_of: Callable[[dict], str] = field(default=lambda item: "")
    date_of: Callable[[dict], datetime | None] = field(default=lambda item: None)
    # Resource units of the first (tokenless) request and of each later one (directory, drive).
    cost_first: int = 1
    cost_next: int = 1
    # What to subscribe to for a job; None when Graph has no subscription for it: such jobs
    # keep polling on their interval.
    watch: Callable[[SyncJob], Watch | None] = _unwatched

    def change_key_of(self, item: dict) -> str:
        return str(item.get("changeKey") or item.get("cTag") or item.get("@odata.etag") or "")[:256]

    def headers(self, job: SyncJob) -> dict[str, str]:
        size = int(job.options.get("page_size") or self.page_size)
        return {"Prefer": f"odata.maxpagesize={size}"} if size else {}


def graph_datetime(value: Any) -> datetime | None:
    """Graph's dates: `2016-10-19T10:37:00Z` or seven fraction digits without a zone (UTC)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.rstrip("Z")
    if "." in text:
        head, fraction = text.split(".", 1)
        digits = "".join(ch for ch in fraction if ch.isdigit())[:6]
        text = f"{head}.{digits}" if digits else head
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _query(**params: str) -> str:
    return "?" + urlencode(params, safe=",$") if params else ""


def _mail_watch(job: SyncJob) -> Watch:
    folder = (job.folder or "inbox").replace("'", "''")
    return Watch(f"me/mailFolders('{quote(folder, safe='')}')/messages", EVERY_CHANGE, 10_080)


def _contacts_watch(job: SyncJob) -> Watch | None:
    # Contacts of a named folder: the emulator and Graph disagree on the resource form, so
    # those jobs keep polling.
    return None if job.folder else Watch("me/contacts", EVERY_CHANGE, 10_080)


def _mail_url(job: SyncJob, graph: str) -> str:
    folder = quote(job.folder or "inbox", safe="")
    return f"{graph}/me/mailFolders/{folder}/messages/delta" + _query(**{"$select": MESSAGE_FIELDS})


def _calendar_url(job: SyncJob, graph: str) -> str:
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=int(job.options.get("days_back", 30)))
    end = now + timedelta(days=int(job.options.get("days_ahead", 180)))
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    # calendarView delta takes no $select or $filter (docs/microsoft.md, "Delta and resync").
    return f"{graph}/me/calendarView/delta" + _query(
        startDateTime=start.strftime(fmt), endDateTime=end.strftime(fmt)
    )


def _contacts_url(job: SyncJob, graph: str) -> str:
    # The documented form names a contact folder; /me/contacts/delta (the default folder) is
    # what Microsoft's own answers point to when no folder id is known.
    if job.folder:
        base = f"{graph}/me/contactFolders/{quote(job.folder, safe='')}/contacts/delta"
    else:
        base = f"{graph}/me/contacts/delta"
    return base + _query(**{"$select": CONTACT_FIELDS})


SPECS: dict[str, Spec] = {
    Resource.PROFILE: Spec(
        Resource.PROFILE,
        "directory",
        ("user.read", "user.readbasic.all", "user.read.all"),
        app_only=False,
        delta=False,
        first_url=lambda job, graph: f"{graph}/me" + _query(**{"$select": USER_FIELDS}),
        title_of=lambda item: item.get("displayName") or item.get("userPrincipalName") or "",
    ),
    Resource.MAIL: Spec(
        Resource.MAIL,
        "mailbox",
        ("mail.read", "mail.readwrite", "mail.readbasic"),
        app_only=False,
        delta=True,
        first_url=_mail_url,
        page_size=200,
        title_of=lambda item: item.get("subject") or "",
        date_of=lambda item: graph_datetime(item.get("receivedDateTime")),
        watch=_mail_watch,
    ),
    Resource.CALENDAR: Spec(
        Resource.CALENDAR,
        "mailbox",
        ("calendars.read", "calendars.readwrite"),
        app_only=False,
        delta=True,
        first_url=_calendar_url,
        page_size=200,
        title_of=lambda item: item.get("subject") or "",
        date_of=lambda item: graph_datetime((item.get("start") or {}).get("dateTime")),
        watch=lambda job: Watch("me/events", EVERY_CHANGE, 10_080),
    ),
    Resource.CONTACTS: Spec(
        Resource.CONTACTS,
        "mailbox",
        ("contacts.read", "contacts.readwrite"),
        app_only=False,
        delta=True,
        first_url=_contacts_url,
        page_size=200,
        title_of=lambda item: item.get("displayName") or "",
        date_of=lambda item: graph_datetime(item.get("lastModifiedDateTime")),
        watch=_contacts_watch,
    ),
    Resource.DRIVE: Spec(
        Resource.DRIVE,
        "drive",
        ("files.read", "files.readwrite", "files.read.all", "files.readwrite.all"),
        app_only=False,
        delta=True,
        first_url=lambda job, graph: f"{graph}/me/drive/root/delta",
        title_of=lambda item: item.get("name") or "",
        date_of=lambda item: graph_datetime(item.get("lastModifiedDateTime")),
        cost_first=2,
        cost_next=1,
        watch=lambda job: Watch("me/drive/root", "updated", 42_300),  # driveItem: updated only
    ),
    Resource.USERS: Spec(
        Resource.USERS,
        "directory",
        (),
        app_only=True,
        delta=True,
        first_url=lambda job, graph: f"{graph}/users/delta" + _query(**{"$select": USER_FIELDS}),
        title_of=lambda item: item.get("displayName") or item.get("userPrincipalName") or "",
        cost_first=1,
        cost_next=1,  # GET users is 2 RU, $select takes one off
        # No "created" for directory objects: a new user or group arrives as "updated".
        watch=lambda job: Watch("users", "updated,deleted", 41_760),
    ),
    Resource.GROUPS: Spec(
        Resource.GROUPS,
        "directory",
        (),
        app_only=True,
        delta=True,
        first_url=lambda job, graph: f"{graph}/groups/delta" + _query(**{"$select": GROUP_FIELDS}),
        title_of=lambda item: item.get("displayName") or "",
        cost_first=2,
        cost_next=2,  # members are 3 RU, $select takes one off
        watch=lambda job: Watch("groups", "updated,deleted", 41_760),
    ),
}


def spec(resource: str) -> Spec:
    return SPECS[resource]


def watched_resources() -> list[str]:
    """The resources whose jobs may have a subscription."""
    return [s.resource for s in SPECS.values() if s.watch is not _unwatched]


def mail_folders() -> tuple[str, ...]:
    return tuple(getattr(settings, "GRAPH_MAIL_FOLDERS", DEFAULT_MAIL_FOLDERS))


def is_removal(item: dict) -> bool:
    """Outlook and the directory send `@removed`; OneDrive a `deleted` facet (docs/microsoft.md,
    "Delta and resync")."""
    return "@removed" in item or "deleted" in item
