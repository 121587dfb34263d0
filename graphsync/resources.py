"""What each synced resource is: its first URL, page size, throttle scope, the options a job
of it may carry, what a change-notification subscription for it watches, and how an item
becomes a record (title, date, change key) or a deletion."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings

from connections.tokens import TokenUnavailable
from graphsync.client import GraphClient, GraphError
from graphsync.models import Resource, SyncJob
from graphsync.throttle import ThrottleWait

logger = logging.getLogger(__name__)

# The message fields Graphport stores (docs/microsoft.md, "What Graphport stores"); $select
# keeps pages small.
MESSAGE_FIELDS = (
    "id,changeKey,createdDateTime,lastModifiedDateTime,receivedDateTime,sentDateTime,subject,"
    "bodyPreview,body,from,sender,toRecipients,ccRecipients,conversationId,internetMessageId,"
    "parentFolderId,isRead,isDraft,hasAttachments,importance,categories,webLink"
)
USER_FIELDS = (
    "id,displayName,givenName,surname,mail,userPrincipalName,jobTitle,officeLocation,"
    "mobilePhone,businessPhones,preferredLanguage,accountEnabled"
)
GROUP_FIELDS = "id,displayName,description,mail,mailEnabled,securityEnabled,members"
CONTACT_FIELDS = (
    "id,changeKey,displayName,givenName,surname,emailAddresses,businessPhones,mobilePhone,"
    "companyName,jobTitle,lastModifiedDateTime"
)
DEFAULT_MAIL_FOLDERS = ("inbox", "sentitems")
# The key under which a group's record keeps its whole member list (user ids): `merge_group`.
MEMBERS = "graphport:members"
EVERY_CHANGE = "created,updated,deleted"
DAYS_BACK, DAYS_AHEAD = 30, 180  # the calendar window's defaults
# Where a default-folder contacts job keeps the folder id Graph gave it.
DEFAULT_FOLDER_ID = "default_folder_id"


# --- job options -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option a job may carry: a whole number or a text, within bounds (a text's length)."""

    kind: type
    low: int
    high: int

    def problem(self, value: Any) -> str | None:
        """What the value should be, when it is not."""
        if self.kind is int:
            # JSON's true is a Python int too, and 1e30 a float: neither is a whole number here.
            if isinstance(value, bool) or not isinstance(value, int):
                return f"a whole number from {self.low} to {self.high}"
            if not self.low <= value <= self.high:
                return f"from {self.low} to {self.high}"
            return None
        if not isinstance(value, str) or not self.low <= len(value) <= self.high:
            return f"a text of {self.low} to {self.high} characters"
        return None


# Page sizes within what Graph serves: messages up to 1,000 (docs/microsoft.md, "Paging"),
# directory objects up to 999.
PAGE_SIZE = Option(int, 1, 1000)
DIRECTORY_PAGE_SIZE = Option(int, 1, 999)
CALENDAR_DAYS = Option(int, 0, 3650)
OPTIONS: dict[str, dict[str, Option]] = {
    Resource.PROFILE: {},  # one entity, read whole
    Resource.MAIL: {"page_size": PAGE_SIZE},
    Resource.CALENDAR: {
        "page_size": PAGE_SIZE,
        "days_back": CALENDAR_DAYS,
        "days_ahead": CALENDAR_DAYS,
    },
    Resource.CONTACTS: {"page_size": PAGE_SIZE, DEFAULT_FOLDER_ID: Option(str, 1, 512)},
    Resource.DRIVE: {"page_size": PAGE_SIZE},
    Resource.USERS: {"page_size": DIRECTORY_PAGE_SIZE},
    Resource.GROUPS: {"page_size": DIRECTORY_PAGE_SIZE},
}


def option_problems(resource: str, options: Any) -> list[str]:
    """What is wrong with options for a job of `resource`: one message per key, naming it."""
    if not isinstance(options, dict):
        return ['Options are a JSON object, e.g. {"page_size": 50}.']
    allowed = OPTIONS.get(resource, {})
    problems = []
    for key, value in options.items():
        option = allowed.get(key)
        if option is None:
            known = ", ".join(sorted(allowed)) or "none"
            problems.append(f"{key}: not an option of {resource} jobs (they take: {known}).")
        elif (wanted := option.problem(value)) is not None:
            problems.append(f"{key}: must be {wanted}, not {str(value)[:40]!r}.")
    if resource == Resource.CALENDAR and not problems:
        back = options.get("days_back", DAYS_BACK)
        ahead = options.get("days_ahead", DAYS_AHEAD)
        if back + ahead < 1:
            problems.append("days_back, days_ahead: the calendar window would be empty.")
    return problems


def options_of(job: SyncJob) -> dict[str, Any]:
    """The job's options as a run uses them. A stored value that breaks the rules (saved before
    they existed, or written around the admin) is left out, so its default applies, with a
    warning: a run, and the batched round it may share with the connection's other jobs, never
    fails on an option."""
    options = job.options if isinstance(job.options, dict) else {}
    problems = option_problems(job.resource, options)
    if not problems:
        return options
    _warn_ignored(job.pk, tuple(problems))
    allowed = OPTIONS.get(job.resource, {})
    kept = {k: v for k, v in options.items() if k in allowed and allowed[k].problem(v) is None}
    if option_problems(job.resource, kept):  # only the calendar window, valued key by key
        kept = {k: v for k, v in kept.items() if k not in ("days_back", "days_ahead")}
    return kept


@functools.lru_cache(maxsize=1024)
def _warn_ignored(job_id: int | None, problems: tuple[str, ...]) -> None:
    # Cached: options are read for every page, and one warning per job and fault is enough.
    logger.warning("job %s: stored options ignored, defaults used: %s", job_id, " ".join(problems))


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
    # For items Graph sends in parts (a group's members): the stored document from the one
    # before (None: none yet) and the new item.
    merge: Callable[[dict | None, dict], dict] | None = None

    def change_key_of(self, item: dict) -> str:
        return str(item.get("changeKey") or item.get("cTag") or item.get("@odata.etag") or "")[:256]

    def headers(self, job: SyncJob) -> dict[str, str]:
        size = options_of(job).get("page_size") or self.page_size
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


def root(job: SyncJob) -> str:
    """Whose data a job reads: `me` (the connection's user), or for an organisation-wide job
    `users/{id}` on the app-only connection (docs/microsoft.md, "Organisation-wide sync")."""
    return f"users/{quote(job.mailbox, safe='')}" if job.mailbox else "me"


def _mail_watch(job: SyncJob) -> Watch:
    folder = (job.folder or "inbox").replace("'", "''")
    return Watch(
        f"{root(job)}/mailFolders('{quote(folder, safe='')}')/messages", EVERY_CHANGE, 10_080
    )


def _contacts_watch(job: SyncJob) -> Watch:
    # The default folder's job watches every contact of the mailbox (`me/contacts`), a named
    # folder's only that folder (docs/microsoft.md, "Change notifications").
    if not job.folder:
        return Watch(f"{root(job)}/contacts", EVERY_CHANGE, 10_080)
    # The id as Graph gave it, quotes doubled (OData), as Microsoft's subscription examples
    # write folder ids (`=` and all).
    folder = job.folder.replace("'", "''")
    return Watch(f"{root(job)}/contactFolders('{folder}')/contacts", EVERY_CHANGE, 10_080)


def merge_group(previous: dict[str, Any] | None, item: dict[str, Any]) -> dict[str, Any]:
    """A group's record from its delta item: Graph sends `members@delta` as changes (and, in a
    first round, the members in chunks over several items of the group), so the whole list is
    kept under MEMBERS. Only user members count: a nested group's members are not expanded."""
    members = set((previous or {}).get(MEMBERS, []))
    for member in item.get("members@delta") or []:
        if not isinstance(member, dict) or not member.get("id"):
            continue
        kind = str(member.get("@odata.type") or "#microsoft.graph.user").lower()
        if "@removed" in member:
            members.discard(str(member["id"]))
        elif kind.endswith(".user"):
            members.add(str(member["id"]))
    merged = {**(previous or {}), **item, MEMBERS: sorted(members)}
    merged.pop("members@delta", None)
    return merged


def _mail_url(job: SyncJob, graph: str) -> str:
    folder = quote(job.folder or "inbox", safe="")
    return f"{graph}/{root(job)}/mailFolders/{folder}/messages/delta" + _query(
        **{"$select": MESSAGE_FIELDS}
    )


def _calendar_url(job: SyncJob, graph: str) -> str:
    now = datetime.now(UTC).replace(microsecond=0)
    options = options_of(job)
    start = now - timedelta(days=options.get("days_back", DAYS_BACK))
    end = now + timedelta(days=options.get("days_ahead", DAYS_AHEAD))
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    # calendarView delta takes no $select or $filter (docs/microsoft.md, "Delta and resync").
    return f"{graph}/{root(job)}/calendarView/delta" + _query(
        startDateTime=start.strftime(fmt), endDateTime=end.strftime(fmt)
    )


def _contacts_url(job: SyncJob, graph: str) -> str:
    # Contact delta is documented per folder only; /me/contacts/delta is not (docs/microsoft.md,
    # "Delta and resync").
    select = _query(**{"$select": CONTACT_FIELDS})
    folder = contact_folder_of(job)
    if folder is None:
        # No id to track the default folder by (it holds no contact and no subfolder, or the
        # lookup was stopped): read it whole, and look again on the next run.
        return f"{graph}/{root(job)}/contacts" + select
    return f"{graph}/{root(job)}/contactFolders/{quote(folder, safe='')}/contacts/delta" + select


def contact_folder_of(job: SyncJob) -> str | None:
    """The contact folder a contacts job reads: its own, or for the default folder (folder "")
    the id Graph gave it, found once and kept in the job's options. None while the default
    folder cannot be found (see `find_default_contact_folder`)."""
    if job.folder:
        return job.folder
    known = options_of(job).get(DEFAULT_FOLDER_ID)
    if known:
        return known
    try:
        found = find_default_contact_folder(job)
    except (GraphError, ThrottleWait, TokenUnavailable) as exc:
        # Whatever stopped the lookup (no mailbox, a missing permission, throttling) stops the
        # run's own first request too, where the engine ends the run by its class, in a
        # batched round as well; the lookup never fails a run by itself.
        logger.info("job %s: default contact folder not looked up: %s", job.pk, exc)
        return None
    if found:
        stored = job.options if isinstance(job.options, dict) else {}
        options = {**stored, DEFAULT_FOLDER_ID: found}
        SyncJob.objects.filter(pk=job.pk).update(options=options)
        job.options = options
    return found


def find_default_contact_folder(job: SyncJob) -> str | None:
    """The id of the mailbox's default Contacts folder, the way Graph's documentation allows:
    it has no documented well-known name, and GET /me/contactFolders lists only its subfolders.
    So: the parentFolderId of a contact in it (/me/contacts reads the default folder), else of
    one of its subfolders. None when it has neither (docs/microsoft.md, "Delta and resync").

    Asked while a run builds its first URL, on a client of its own: these one or two requests
    spend the mailbox's budget but are not counted on the run."""
    client = GraphClient(job.connection)
    try:
        for path in (f"/{root(job)}/contacts", f"/{root(job)}/contactFolders"):
            url = path + _query(**{"$top": "1", "$select": "parentFolderId"})
            for item in client.get_page(url, client.plan("mailbox", 1, job.mailbox)).items:
                if isinstance(item, dict) and item.get("parentFolderId"):
                    return str(item["parentFolderId"])
    finally:
        client.close()
    return None


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
        watch=lambda job: Watch(f"{root(job)}/events", EVERY_CHANGE, 10_080),
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
        first_url=lambda job, graph: f"{graph}/{root(job)}/drive/root/delta",
        title_of=lambda item: item.get("name") or "",
        date_of=lambda item: graph_datetime(item.get("lastModifiedDateTime")),
        cost_first=2,
        cost_next=1,
        # driveItem: updated only
        watch=lambda job: Watch(f"{root(job)}/drive/root", "updated", 42_300),
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
        merge=merge_group,
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
