"""Graph reads as a sync engine does them: lists, `$select`, paging, deltas and 410s."""

from __future__ import annotations

import pytest

from tests.emulator.conftest import ADELE, CLIENT_ID, app_token, connect, graph_get

INBOX = "me/mailFolders('inbox')/messages/delta"


@pytest.fixture
def token(emulator, relaxed_scope):
    return connect(emulator)[1]["access_token"]


def follow(emu, token, url, **kwargs):
    """Every item of a delta round and the deltaLink that ends it."""
    items = []
    pages = 0
    while True:
        page = graph_get(emu, token, url, **kwargs)
        assert page.status_code == 200, page.text
        body = page.json()
        items.extend(body["value"])
        pages += 1
        if "@odata.nextLink" in body:
            assert body["@odata.nextLink"].startswith(emu.graph_url)
            url = body["@odata.nextLink"]
            continue
        return items, body["@odata.deltaLink"], pages


def test_messages_list_honours_top_and_select(emulator, token):
    body = graph_get(emulator, token, "me/messages?$top=5&$select=subject,sender").json()
    assert len(body["value"]) == 5
    assert body["@odata.context"].endswith(f"users('{ADELE}')/messages(subject,sender)")
    assert set(body["value"][0]) == {"@odata.etag", "id", "subject", "sender"}
    assert "$skiptoken=" in body["@odata.nextLink"]
    second = graph_get(emulator, token, body["@odata.nextLink"]).json()
    assert not {m["id"] for m in second["value"]} & {m["id"] for m in body["value"]}
    full = graph_get(emulator, token, "me/messages?$top=1").json()["value"][0]
    for field in (
        "id",
        "changeKey",
        "receivedDateTime",
        "subject",
        "bodyPreview",
        "body",
        "from",
        "toRecipients",
        "conversationId",
        "internetMessageId",
        "parentFolderId",
        "isRead",
        "webLink",
        "importance",
        "categories",
    ):
        assert field in full


def test_message_delta_across_pages_with_changes_deletions_and_410(emulator, token):
    items, delta_link, pages = follow(
        emulator,
        token,
        INBOX + "?$select=subject,isRead",
        headers={"Prefer": "odata.maxpagesize=50"},
    )
    assert len(items) == 120 and pages == 3
    assert items[0]["@odata.type"] == "#microsoft.graph.message"
    assert "$deltatoken=" in delta_link
    control = emulator.control
    ids = control.items(ADELE, "messages", folder="inbox", limit=3)["ids"]
    control.update_item(ADELE, "messages", ids[0], isRead=True, subject="Changed")
    control.delete_item(ADELE, "messages", ids[1])
    added = control.add_items(ADELE, "messages", count=2)
    changes, next_link, _ = follow(emulator, token, delta_link)
    by_id = {item["id"]: item for item in changes}
    assert by_id[ids[0]]["subject"] == "Changed"
    assert set(by_id[ids[0]]) == {"@odata.type", "@odata.etag", "id", "subject", "isRead"}
    assert by_id[ids[1]]["@removed"] == {"reason": "deleted"}
    assert set(added) <= set(by_id)
    assert follow(emulator, token, next_link)[0] == []
    control.invalidate_delta(link=next_link)
    gone = graph_get(emulator, token, next_link)
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "SyncStateNotFound"
    assert gone.headers["Location"].startswith(emulator.graph_url)
    restart, _, _ = follow(emulator, token, gone.headers["Location"])
    assert len(restart) == 120 - 1 + 2


def test_invalidating_all_delta_state_of_a_resource(emulator, token):
    _, delta_link, _ = follow(emulator, token, INBOX, headers={"Prefer": "odata.maxpagesize=200"})
    emulator.control.invalidate_delta(user=ADELE, resource="messages")
    assert graph_get(emulator, token, delta_link).status_code == 410


def test_top_caps_at_1000_and_prefer_is_applied(emulator, token):
    emulator.control.add_items(ADELE, "messages", count=3, folder="sentitems")
    response = graph_get(
        emulator,
        token,
        "me/mailFolders/sentitems/messages/delta",
        headers={"Prefer": "odata.maxpagesize=7"},
    )
    assert response.headers["Preference-Applied"] == "odata.maxpagesize=7"
    assert len(response.json()["value"]) == 7


def test_calendar_view_delta_and_removed_events(emulator, token):
    window = "startDateTime=2024-12-01T00:00:00Z&endDateTime=2025-02-01T00:00:00Z"
    events, delta_link, _ = follow(
        emulator,
        token,
        f"me/calendarView/delta?{window}",
        headers={"Prefer": "odata.maxpagesize=10"},
    )
    assert events and all(e["@odata.type"] == "#microsoft.graph.event" for e in events)
    assert {"start", "end", "subject", "organizer", "iCalUId"} <= set(events[0])
    missing = graph_get(emulator, token, "me/calendarView/delta")
    assert missing.status_code == 400
    emulator.control.delete_item(ADELE, "events", events[0]["id"])
    changes, _, _ = follow(emulator, token, delta_link)
    assert changes == [
        {
            "@odata.type": "#microsoft.graph.event",
            "id": events[0]["id"],
            "@removed": {"reason": "deleted"},
        }
    ]


def test_contacts_delta(emulator, token):
    # The default folder's id, the documented way: the parentFolderId of a contact in it.
    first = graph_get(emulator, token, "me/contacts?$top=1&$select=parentFolderId").json()
    folder = first["value"][0]["parentFolderId"]
    url = f"me/contactFolders/{folder}/contacts/delta?$select=displayName"
    contacts, delta_link, _ = follow(emulator, token, url)
    assert len(contacts) == 25 and set(contacts[0]) >= {"id", "displayName"}
    emulator.control.update_item(ADELE, "contacts", contacts[3]["id"], displayName="Renamed")
    changes, _, _ = follow(emulator, token, delta_link)
    assert [c["displayName"] for c in changes] == ["Renamed"]


def test_contacts_delta_without_a_folder_is_refused_as_graph_refuses_untracked_collections(
    emulator, token
):
    refused = graph_get(emulator, token, "me/contacts/delta?$select=displayName")
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "BadRequest"
    assert "Change tracking is not supported against 'microsoft.graph.contact'" in error["message"]
    assert "request-id" in error["innerError"]


def test_contact_folders_list_the_default_folders_subfolders_and_each_tracks_its_own(
    emulator, token
):
    added = emulator.control.add_contact_folder(ADELE, "Suppliers", count=3)
    default = graph_get(emulator, token, "me/contacts?$top=1").json()["value"][0]["parentFolderId"]
    assert default == added["default_folder_id"]
    # The default folder is not among its own subfolders; they name it as their parent.
    listed = graph_get(emulator, token, "me/contactFolders").json()["value"]
    assert [(f["id"], f["displayName"], f["parentFolderId"]) for f in listed] == [
        (added["id"], "Suppliers", default)
    ]
    children = graph_get(emulator, token, f"me/contactFolders('{default}')/childFolders").json()
    assert [f["id"] for f in children["value"]] == [added["id"]]
    itself = graph_get(emulator, token, f"me/contactFolders/{default}").json()
    assert (itself["id"], itself["displayName"]) == (default, "Contacts")
    # No well-known name for contact folders is documented: none is taken.
    assert graph_get(emulator, token, "me/contactFolders/contacts").status_code == 404

    suppliers, _, _ = follow(emulator, token, f"me/contactFolders/{added['id']}/contacts/delta")
    assert len(suppliers) == 3 and {c["parentFolderId"] for c in suppliers} == {added["id"]}
    everyone, delta_link, _ = follow(emulator, token, f"me/contactFolders/{default}/contacts/delta")
    assert len(everyone) == 25 and not {c["id"] for c in everyone} & {c["id"] for c in suppliers}
    emulator.control.add_items(ADELE, "contacts", folder=added["id"])
    assert follow(emulator, token, delta_link)[0] == []  # another folder's change
    listed_contacts = graph_get(emulator, token, f"me/contactFolders/{added['id']}/contacts")
    assert len(listed_contacts.json()["value"]) == 4


def test_a_scenario_can_give_a_mailbox_contact_subfolders(emulator, token):
    emulator.control.add_user(
        "contoso.example",
        upn="nestor.wilke@contoso.example",
        data={"contacts": 0, "contact_folders": {"Family": 2, "Clubs": 1}},
    )
    emulator.control.grant_consent("contoso.example", CLIENT_ID)
    app = app_token(emulator)
    folders = graph_get(emulator, app, "users/nestor.wilke@contoso.example/contactFolders")
    assert sorted(f["displayName"] for f in folders.json()["value"]) == ["Clubs", "Family"]
    empty = graph_get(emulator, app, "users/nestor.wilke@contoso.example/contacts")
    assert empty.json()["value"] == []


def test_drive_delta_reports_deletions_with_the_deleted_facet(emulator, token):
    items, delta_link, _ = follow(emulator, token, "me/drive/root/delta")
    assert len(items) == 31 and any("root" in i for i in items)
    assert "token=" in delta_link and "$deltatoken" not in delta_link
    a_file = next(i for i in items if "file" in i)
    assert "path" not in a_file["parentReference"]
    emulator.control.delete_item(ADELE, "drive-items", a_file["id"])
    changes, latest_link, _ = follow(emulator, token, delta_link)
    assert changes[0]["id"] == a_file["id"] and "deleted" in changes[0]
    latest = graph_get(emulator, token, "me/drive/root/delta?token=latest").json()
    assert latest["value"] == [] and "token=" in latest["@odata.deltaLink"]
    emulator.control.invalidate_delta(user=ADELE, resource="drive")
    gone = graph_get(emulator, token, latest_link)
    assert gone.status_code == 410 and "Location" in gone.headers


def test_big_mailboxes_are_cheap_and_deterministic(emulator, token):
    emulator.control.add_user(
        "contoso.example", upn="big.box@contoso.example", data={"messages": 50000}
    )
    emulator.control.grant_consent("contoso.example", emulator.scenario["apps"][0]["client_id"])
    from tests.emulator.conftest import app_token

    app = app_token(emulator)
    page = graph_get(emulator, app, "users/big.box@contoso.example/messages?$top=1000")
    assert page.status_code == 200 and len(page.json()["value"]) == 1000
    again = graph_get(emulator, app, "users/big.box@contoso.example/messages?$top=1000")
    assert again.json()["value"] == page.json()["value"]
