"""Directory users as organisation-wide sync meets them: disabled accounts, properties Graph
returns only when selected, users without a mailbox or with an inactive one."""

from __future__ import annotations

import pytest

from emulator.control import ControlError
from tests.emulator.conftest import ADELE, ALEX, CLIENT_ID, CONTOSO, DIEGO, app_token, graph_get

NO_MAILBOX = "The mailbox is either inactive, soft-deleted, or is hosted on-premise."
OUTLOOK = ["messages", "mailFolders/inbox/messages/delta", "events", "contacts", "contactFolders"]


@pytest.fixture
def token(emulator):
    emulator.control.grant_consent(CONTOSO, CLIENT_ID)
    return app_token(emulator)


def by_id(page):
    return {u["id"]: u for u in page.json()["value"]}


def test_a_disabled_account_shows_in_users_and_their_delta_when_selected(emulator, token):
    first = graph_get(emulator, token, "users/delta?$select=displayName,accountEnabled")
    assert by_id(first)[ALEX]["accountEnabled"] is True
    emulator.control.update_user(ALEX, account_enabled=False)

    listed = by_id(graph_get(emulator, token, "users?$select=id,accountEnabled"))
    assert listed[ALEX] == {"id": ALEX, "accountEnabled": False}
    assert listed[ADELE]["accountEnabled"] is True
    changes = graph_get(emulator, token, first.json()["@odata.deltaLink"]).json()["value"]
    assert [(u["id"], u["accountEnabled"]) for u in changes] == [(ALEX, False)]


def test_properties_outside_the_default_set_come_only_when_selected(emulator, token):
    emulator.control.update_user(ALEX, department="Marketing")
    plain = by_id(graph_get(emulator, token, "users"))[ALEX]
    assert "accountEnabled" not in plain and "department" not in plain
    assert plain["userPrincipalName"] == "alex.wilber@contoso.example"
    chosen = graph_get(emulator, token, f"users/{ALEX}?$select=department,accountEnabled").json()
    assert (chosen["department"], chosen["accountEnabled"]) == ("Marketing", True)


@pytest.mark.parametrize("path", OUTLOOK)
def test_a_user_without_a_mailbox_answers_mailbox_not_enabled(emulator, token, path):
    response = graph_get(emulator, token, f"users/{DIEGO}/{path}")
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["message"]) == ("MailboxNotEnabledForRESTAPI", NO_MAILBOX)
    # No Exchange mailbox means no `mail`; OneDrive is another service.
    assert graph_get(emulator, token, f"users/{DIEGO}?$select=mail").json()["mail"] is None
    assert graph_get(emulator, token, f"users/{DIEGO}/drive/root/children").status_code == 200


def test_an_inactive_mailbox_keeps_its_address_and_items_for_when_it_comes_back(emulator, token):
    assert emulator.control.update_user(ALEX, mailbox_inactive=True)["mail"] == (
        "alex.wilber@contoso.example"
    )
    for path in OUTLOOK:
        response = graph_get(emulator, token, f"users/{ALEX}/{path}")
        assert response.status_code == 404, path
        assert response.json()["error"]["message"] == NO_MAILBOX
    emulator.control.update_user(ALEX, mailbox_inactive=False)
    inbox = graph_get(emulator, token, f"users/{ALEX}/mailFolders/inbox").json()
    assert inbox["totalItemCount"] == 60


def test_a_scenario_can_start_with_disabled_users_and_inactive_mailboxes(emulator):
    emulator.control.add_user(
        CONTOSO,
        upn="former.employee",
        account_enabled=False,
        mailbox_inactive=True,
        department="Sales",
    )
    state = {u["upn"]: u for u in emulator.control.state()["tenants"][0]["users"]}
    former = state["former.employee@contoso.example"]
    assert former["account_enabled"] is False and former["mailbox_inactive"] is True
    assert former["department"] == "Sales"


def test_a_changed_user_rejects_unknown_fields(emulator):
    with pytest.raises(ControlError, match="unknown user fields"):
        emulator.control.update_user(ALEX, accountEnabled=False)
