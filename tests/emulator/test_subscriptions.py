"""Subscriptions: the validation handshake, renewal, deletion, notifications, lifecycle."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.emulator.conftest import ADELE, Receiver, connect


@pytest.fixture
def token(emulator, relaxed_scope):
    return connect(emulator)[1]["access_token"]


def expiry(minutes):
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def subscribe(emu, token, receiver, minutes=60, **extra):
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": f"{receiver.url}/notify",
        "lifecycleNotificationUrl": f"{receiver.url}/lifecycle",
        "resource": "me/mailFolders('Inbox')/messages",
        "expirationDateTime": expiry(minutes),
        "clientState": "s3cret",
        **extra,
    }
    return requests.post(
        f"{emu.graph_url}/v1.0/subscriptions",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def wait_for(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_create_validates_both_urls_then_renew_and_delete(emulator, token, receiver):
    created = subscribe(emulator, token, receiver)
    assert created.status_code == 201, created.text
    sub = created.json()
    assert len(receiver.validations) == 2
    assert receiver.validations[0].startswith("Validation: Testing client application")
    assert sub["clientState"] == "s3cret" and sub["resource"] == "me/mailFolders('Inbox')/messages"
    url = f"{emulator.graph_url}/v1.0/subscriptions/{sub['id']}"
    headers = {"Authorization": f"Bearer {token}"}
    renewed = requests.patch(
        url, json={"expirationDateTime": expiry(120)}, headers=headers, timeout=10
    )
    assert renewed.status_code == 200
    too_long = requests.patch(
        url, json={"expirationDateTime": expiry(10081)}, headers=headers, timeout=10
    )
    assert too_long.status_code == 400
    assert requests.delete(url, headers=headers, timeout=10).status_code == 204
    assert requests.get(url, headers=headers, timeout=10).status_code == 404


def test_failed_handshake_is_rejected(emulator, token):
    silent = Receiver(echo=False)
    try:
        response = subscribe(emulator, token, silent)
    finally:
        silent.close()
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ValidationError"


def test_expiry_beyond_the_resource_maximum_is_rejected(emulator, token, receiver):
    response = subscribe(emulator, token, receiver, minutes=10081)
    assert response.status_code == 400
    assert "10080" in response.json()["error"]["message"]


def test_data_changes_are_notified_with_client_state(emulator, token, receiver):
    sub = subscribe(emulator, token, receiver).json()
    new_id = emulator.control.add_items(ADELE, "messages", count=1)[0]
    assert wait_for(lambda: receiver.received)
    note = receiver.received[0]["body"]["value"][0]
    assert note["subscriptionId"] == sub["id"] and note["clientState"] == "s3cret"
    assert note["changeType"] == "created" and note["resourceData"]["id"] == new_id
    assert note["resource"] == f"Users/{ADELE}/Messages/{new_id}"


def test_lifecycle_events_go_to_the_lifecycle_url(emulator, token, receiver):
    sub = subscribe(emulator, token, receiver).json()
    for event in ("reauthorizationRequired", "missed", "subscriptionRemoved"):
        assert emulator.control.fire_lifecycle(sub["id"], event) == 202
    events = [
        r["body"]["value"][0]["lifecycleEvent"]
        for r in receiver.received
        if r["path"] == "/lifecycle"
    ]
    assert events == ["reauthorizationRequired", "missed", "subscriptionRemoved"]
    assert emulator.control.subscriptions()["subscriptions"] == []


def test_drive_subscriptions_take_and_send_updated_only(emulator, token, receiver):
    resource = {"resource": "me/drive/root"}
    refused = subscribe(emulator, token, receiver, changeType="created,updated", **resource)
    assert refused.status_code == 400
    created = subscribe(emulator, token, receiver, changeType="updated", **resource)
    assert created.status_code == 201, created.text
    emulator.control.add_items(ADELE, "drive-items", count=1)
    assert wait_for(lambda: receiver.received)
    assert receiver.received[0]["body"]["value"][0]["changeType"] == "updated"


def test_contact_subscriptions_watch_the_mailbox_or_one_folder(emulator, token, receiver):
    folder = emulator.control.add_contact_folder(ADELE, "Suppliers")["id"]
    everything = subscribe(emulator, token, receiver, resource="me/contacts")
    assert everything.status_code == 201, everything.text
    one = subscribe(emulator, token, receiver, resource=f"me/contactFolders('{folder}')/contacts")
    assert one.status_code == 201, one.text
    unknown = subscribe(emulator, token, receiver, resource="me/contactFolders('nope')/contacts")
    assert unknown.status_code == 400
    in_default = emulator.control.add_items(ADELE, "contacts")[0]
    in_folder = emulator.control.add_items(ADELE, "contacts", folder=folder)[0]
    assert wait_for(lambda: len(receiver.notes()) >= 3)
    time.sleep(0.2)  # nothing more is on its way
    seen = {(note["subscriptionId"], note["resourceData"]["id"]) for note in receiver.notes()}
    assert seen == {
        (everything.json()["id"], in_default),
        (everything.json()["id"], in_folder),
        (one.json()["id"], in_folder),
    }


def test_notifications_arriving_during_a_delivery_go_together_in_the_next(emulator, token):
    slow = Receiver(pause=0.3)
    try:
        sub = subscribe(emulator, token, slow).json()
        added = []
        for _ in range(8):
            added += emulator.control.add_items(ADELE, "messages", count=5)
        assert wait_for(lambda: len(slow.notes()) == 40, timeout=10)
        time.sleep(0.4)  # nothing more is on its way
        posts = [r for r in slow.received if r["path"] == "/notify"]
    finally:
        slow.close()
    # Every one once; in any order, as with Graph (several POSTs are under way at once).
    assert sorted(note["resourceData"]["id"] for note in slow.notes()) == sorted(added)
    assert {note["subscriptionId"] for note in slow.notes()} == {sub["id"]}
    # A few go at once while the receiver is busy; the rest wait and go in batches.
    assert len(posts) < 20
    assert max(len(r["body"]["value"]) for r in posts) > 1


def test_a_delivery_refused_or_failed_is_sent_again(emulator, token, receiver):
    subscribe(emulator, token, receiver)
    receiver.answers = [(429, "1"), (503, None)]
    [new_id] = emulator.control.add_items(ADELE, "messages", count=1)
    assert wait_for(lambda: len(receiver.notes()) == 3, timeout=10)
    first, second, third = (r for r in receiver.received if r["path"] == "/notify")
    assert first["body"] == second["body"] == third["body"]
    assert receiver.notes()[0]["resourceData"]["id"] == new_id
    assert second["at"] - first["at"] >= 0.9  # its Retry-After
    assert third["at"] - second["at"] >= 1.8  # no Retry-After: a pause growing with each try
    log = [d for d in emulator.control.subscriptions()["deliveries"] if d["kind"] == "change"]
    assert [(d["attempt"], d["status"]) for d in log] == [(1, 429), (2, 503), (3, 202)]
