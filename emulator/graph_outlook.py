"""Outlook resources: messages and mail folders, events and calendarView, contacts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from emulator.delta import delta_response, list_response
from emulator.errors import GraphError, access_denied, blocked_by_access_policy
from emulator.generate import iso7
from emulator.paging import project
from emulator.routing import Call, Reply, Route, reply, router
from emulator.store import Collection, Item
from emulator.world import MAIL_FOLDERS, Mailbox

S = r"\{s\}"
FOLDER = r"mailfolders/(?P<folder>[^/]+)"
ROUTES: list[Route] = []
r = router(ROUTES, "outlook")
MAIL = {"mail.read", "mail.readwrite", "mail.readbasic", "mail.readbasic.all"}
CALENDARS = {"calendars.read", "calendars.readwrite", "calendars.readbasic"}
CONTACTS = {"contacts.read", "contacts.readwrite"}
WRITE = {"mail.readwrite", "calendars.readwrite", "contacts.readwrite"}


def mailbox(call: Call, perms: set[str], write: bool = False) -> Mailbox:
    user = call.subject
    token = call.token
    assert user is not None
    granted = {s.lower() for s in (token.scopes if token.user_id else token.roles)}
    if token.user_id is not None and token.user_id != user.id:
        raise access_denied()
    if not granted & perms or (write and not granted & WRITE):
        raise access_denied()
    if token.user_id is None and not call.emu.world.app_may_open(token.client_id, user):
        raise blocked_by_access_policy()
    if not user.outlook_enabled:
        raise GraphError(
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )
    return call.emu.world.mailbox(user)


def item_missing() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def folder(call: Call, box: Mailbox) -> Collection:
    name = call.emu.world.folder_name(box, call.match["folder"])
    if name is None or name not in box.folders:
        raise item_missing()
    return box.folders[name]


def find_message(box: Mailbox, item_id: str) -> tuple[Collection, Item]:
    for coll in box.folders.values():
        item = coll.get_by_id(item_id)
        if item is not None:
            return coll, item
    raise item_missing()


# messages


@r("GET", f"{S}/messages")
async def list_messages(call: Call) -> Reply:
    box = mailbox(call, MAIL)
    assert call.subject is not None
    return list_response(
        call, list(box.folders.values()), f"users('{call.subject.id}')/messages", 10, 1000
    )


@r("GET", f"{S}/{FOLDER}/messages")
async def list_folder_messages(call: Call) -> Reply:
    box = mailbox(call, MAIL)
    assert call.subject is not None
    return list_response(
        call,
        [folder(call, box)],
        f"users('{call.subject.id}')/mailFolders('{call.match['folder']}')/messages",
        10,
        1000,
    )


@r("GET", f"{S}/{FOLDER}/messages/delta")
async def messages_delta(call: Call) -> Reply:
    box = mailbox(call, MAIL)
    return delta_response(call, folder(call, box), "Collection(message)", 10, 1000)


@r("GET", f"{S}/messages/(?P<id>[^/]+)")
async def get_message(call: Call) -> Reply:
    box = mailbox(call, MAIL)
    _, item = find_message(box, call.match["id"])
    body = project(item, call.select())
    assert call.subject is not None
    body = {
        "@odata.context": f"{call.base}/$metadata#users('{call.subject.id}')/messages/$entity",
        **body,
    }
    return reply(200, body)


@r("PATCH", f"{S}/messages/(?P<id>[^/]+)")
async def update_message(call: Call) -> Reply:
    box = mailbox(call, MAIL, write=True)
    coll, _ = find_message(box, call.match["id"])
    allowed = {"isRead", "categories", "flag", "importance", "subject", "inferenceClassification"}
    fields = {k: v for k, v in (call.body or {}).items() if k in allowed}
    return reply(200, coll.update(call.match["id"], fields))


@r("DELETE", f"{S}/messages/(?P<id>[^/]+)")
async def delete_message(call: Call) -> Reply:
    box = mailbox(call, MAIL, write=True)
    coll, _ = find_message(box, call.match["id"])
    coll.delete(call.match["id"])
    return reply(204)


def folder_body(call: Call, box: Mailbox, name: str) -> Item:
    coll = box.folders[name]
    return {
        "id": call.emu.world.folder_id(box, name),
        "displayName": MAIL_FOLDERS[name][0],
        "parentFolderId": "AAMkADroot" + box.owner.id[:8],
        "childFolderCount": 0,
        "unreadItemCount": 0,
        "totalItemCount": coll.live_count(),
        "isHidden": False,
    }


@r("GET", f"{S}/mailfolders")
async def list_folders(call: Call) -> Reply:
    box = mailbox(call, MAIL)
    assert call.subject is not None
    value = [folder_body(call, box, name) for name in box.folders]
    return reply(
        200,
        {
            "@odata.context": f"{call.base}/$metadata#users('{call.subject.id}')/mailFolders",
            "value": value,
        },
    )


@r("GET", f"{S}/{FOLDER}")
async def get_folder(call: Call) -> Reply:
    box = mailbox(call, MAIL)
    coll = folder(call, box)
    return reply(200, folder_body(call, box, coll.key.rsplit(":", 1)[1]))


# events


def window(call: Call, required: bool) -> list[str] | None:
    lowered = {k.lower(): v for k, v in call.query.items()}
    start, end = lowered.get("startdatetime"), lowered.get("enddatetime")
    if not start or not end:
        if required:
            raise GraphError(
                400,
                "ErrorInvalidParameter",
                "This request requires a time window "
                "specified by the query string parameters StartDateTime and "
                "EndDateTime.",
            )
        return None
    try:
        bounds = [
            datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() for v in (start, end)
        ]
    except ValueError as exc:
        raise GraphError(
            400, "ErrorInvalidParameter", "Invalid StartDateTime or EndDateTime."
        ) from exc
    return [iso7(bounds[0]), iso7(bounds[1])]


def in_window(bounds: list[str] | None) -> Callable[[Item], bool] | None:
    if bounds is None:
        return None
    lo, hi = bounds
    return lambda item: item["start"]["dateTime"] < hi and item["end"]["dateTime"] > lo


@r("GET", f"{S}/events")
async def list_events(call: Call) -> Reply:
    box = mailbox(call, CALENDARS)
    assert box.events is not None and call.subject is not None
    return list_response(call, [box.events], f"users('{call.subject.id}')/events", 10, 1000)


@r("GET", f"{S}/calendarview")
async def calendar_view(call: Call) -> Reply:
    box = mailbox(call, CALENDARS)
    assert box.events is not None and call.subject is not None
    bounds = window(call, required=True)
    return list_response(
        call,
        [box.events],
        f"users('{call.subject.id}')/calendarView",
        10,
        1000,
        keep=in_window(bounds),
    )


@r("GET", f"{S}/calendarview/delta")
async def calendar_delta(call: Call) -> Reply:
    box = mailbox(call, CALENDARS)
    assert box.events is not None
    has_token = "$skiptoken" in call.query or "$deltatoken" in call.query
    bounds = None if has_token else window(call, required=True)
    # The window is fixed by the first request and travels inside the tokens.
    return delta_response(
        call,
        box.events,
        "Collection(event)",
        10,
        1000,
        window=bounds,
        keep_for=lambda cur: in_window(cur.r),
    )


@r("GET", f"{S}/events/(?P<id>[^/]+)")
async def get_event(call: Call) -> Reply:
    box = mailbox(call, CALENDARS)
    assert box.events is not None
    item = box.events.get_by_id(call.match["id"])
    if item is None:
        raise item_missing()
    return reply(200, project(item, call.select()))


# contacts
#
# Graph documents contact delta per folder only (/contactFolders/{id}/contacts/delta); the
# folder-less /contacts/delta is answered as the live service answers an untracked collection.
# /contactFolders lists the subfolders of the default Contacts folder, not that folder itself:
# its id is the parentFolderId of what /contacts (the default folder) or /contactFolders
# returns (docs/microsoft.md, "Delta and resync").


def contact_folder(call: Call, box: Mailbox) -> Collection:
    coll = call.emu.world.contact_folder(box, call.match["folder"])
    if coll is None:
        raise item_missing()
    return coll


def contact_folder_body(box: Mailbox, folder_id: str) -> Item:
    parent = box.root_folder_id if folder_id == box.contacts_folder_id else box.contacts_folder_id
    return {
        "id": folder_id,
        "displayName": box.contact_folder_names[folder_id],
        "parentFolderId": parent,
    }


def child_contact_folders(call: Call, box: Mailbox, parent: str) -> Reply:
    assert call.subject is not None
    value = [
        project(contact_folder_body(box, folder_id), call.select())
        for folder_id in box.contact_folders
        if folder_id != box.contacts_folder_id and parent == box.contacts_folder_id
    ]
    return reply(
        200,
        {
            "@odata.context": f"{call.base}/$metadata#users('{call.subject.id}')/contactFolders",
            "value": value,
        },
    )


@r("GET", f"{S}/contacts")
async def list_contacts(call: Call) -> Reply:
    box = mailbox(call, CONTACTS)
    assert box.contacts is not None and call.subject is not None
    return list_response(call, [box.contacts], f"users('{call.subject.id}')/contacts", 10, 1000)


@r("GET", f"{S}/contacts/delta")
async def contacts_delta(call: Call) -> Reply:
    mailbox(call, CONTACTS)
    raise GraphError(
        400,
        "BadRequest",
        "Unsupported request: Change tracking is not supported against 'microsoft.graph.contact'.",
    )


@r("GET", f"{S}/contactfolders")
async def list_contact_folders(call: Call) -> Reply:
    box = mailbox(call, CONTACTS)
    return child_contact_folders(call, box, box.contacts_folder_id)


@r("GET", f"{S}/contactfolders/(?P<folder>[^/]+)")
async def get_contact_folder(call: Call) -> Reply:
    box = mailbox(call, CONTACTS)
    contact_folder(call, box)
    folder_id = call.match["folder"].strip("'\"")
    return reply(200, project(contact_folder_body(box, folder_id), call.select()))


@r("GET", f"{S}/contactfolders/(?P<folder>[^/]+)/childfolders")
async def list_child_contact_folders(call: Call) -> Reply:
    box = mailbox(call, CONTACTS)
    contact_folder(call, box)
    return child_contact_folders(call, box, call.match["folder"].strip("'\""))


@r("GET", f"{S}/contactfolders/(?P<folder>[^/]+)/contacts")
async def list_folder_contacts(call: Call) -> Reply:
    box = mailbox(call, CONTACTS)
    coll = contact_folder(call, box)
    assert call.subject is not None
    context = f"users('{call.subject.id}')/contactFolders('{call.match['folder']}')/contacts"
    return list_response(call, [coll], context, 10, 1000)


@r("GET", f"{S}/contactfolders/(?P<folder>[^/]+)/contacts/delta")
async def contact_folder_delta(call: Call) -> Reply:
    box = mailbox(call, CONTACTS)
    return delta_response(call, contact_folder(call, box), "Collection(contact)", 10, 1000)


@r("GET", f"{S}/contacts/(?P<id>[^/]+)")
async def get_contact(call: Call) -> Reply:
    box = mailbox(call, CONTACTS)
    for coll in box.contact_folders.values():
        item = coll.get_by_id(call.match["id"])
        if item is not None:
            return reply(200, project(item, call.select()))
    raise item_missing()
