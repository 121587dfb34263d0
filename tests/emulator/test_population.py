"""Generated organisations: thousands of users with modest mailboxes, in department groups,
built quickly and kept small."""

from __future__ import annotations

import copy
import time

import pytest
import requests

from emulator.testing import running_emulator
from tests.emulator.conftest import CLIENT_ID, CONTOSO, app_token, graph_get, scenario

SMALL = {"messages": 20, "events": 5, "contacts": 3, "files": 4}


@pytest.fixture
def token(emulator):
    emulator.control.grant_consent(CONTOSO, CLIENT_ID)
    return app_token(emulator)


def every(emulator, token, url):
    """All items of a listing, following nextLink."""
    items = []
    while url:
        page = graph_get(emulator, token, url).json()
        items += page["value"]
        url = page.get("@odata.nextLink")
    return items


def test_every_generated_user_has_an_address_and_a_modest_mailbox(emulator, token):
    made = emulator.control.add_population(CONTOSO, users=120, data=SMALL)
    assert made["users"] == 120 and made["first_upn"] == "adele.vance.0@contoso.example"
    users = every(emulator, token, "users?$top=999&$select=id,userPrincipalName,mail,department")
    assert len(users) == 123  # after the scenario's three
    someone = users[3 + 41]
    assert someone["userPrincipalName"] == "alex.sicilian.41@contoso.example"
    assert someone["mail"] == someone["userPrincipalName"]
    assert someone["department"] == "Marketing"  # the second of 8 departments, round-robin

    box = f"users/{someone['id']}"
    assert graph_get(emulator, token, f"{box}/mailFolders/inbox").json()["totalItemCount"] == 20
    assert len(every(emulator, token, f"{box}/events?$top=1000")) == 5
    assert len(every(emulator, token, f"{box}/contacts?$top=1000")) == 3
    drive = every(emulator, token, f"{box}/drive/root/delta")
    assert len([i for i in drive if "root" not in i]) == 4


def test_departments_are_groups_that_page_their_members_and_report_joiners(emulator, token):
    made = emulator.control.add_population(CONTOSO, users=40, data=SMALL, departments=4)
    assert [(g["display_name"], g["members"]) for g in made["groups"]] == [
        ("Sales", 10),
        ("Marketing", 10),
        ("Finance", 10),
        ("Engineering", 10),
        ("All Staff", 40),
    ]
    sales = made["groups"][0]["id"]
    first = graph_get(emulator, token, f"groups/{sales}/members?$top=4").json()
    assert len(first["value"]) == 4 and "@odata.nextLink" in first
    assert len(every(emulator, token, f"groups/{sales}/members?$top=4")) == 10
    delta = every(emulator, token, "groups/delta")
    assert {g["displayName"] for g in delta} >= {"Sales", "All Staff"}
    link = graph_get(emulator, token, "groups/delta").json()["@odata.deltaLink"]

    more = emulator.control.add_population(CONTOSO, users=8, data=SMALL, departments=4)
    assert more["first_upn"] == "adele.sicilian.40@contoso.example"
    assert more["groups"][0] == {"id": sales, "display_name": "Sales", "members": 12}
    changed = {g["id"]: g for g in graph_get(emulator, token, link).json()["value"]}
    joiners = changed[sales]["members@delta"]
    assert len(joiners) == 2 and not any("@removed" in m for m in joiners)


def test_some_generated_users_have_no_mailbox_or_a_disabled_account(emulator, token):
    emulator.control.add_population(CONTOSO, users=50, data=SMALL, without_mailbox=5, disabled=2)
    users = every(emulator, token, "users?$top=999&$select=id,mail,accountEnabled")
    generated = users[3:]
    without = [u for u in generated if u["mail"] is None]
    assert len(without) == 5
    assert sum(not u["accountEnabled"] for u in generated) == 2
    refused = graph_get(emulator, token, f"users/{without[0]['id']}/messages")
    assert refused.json()["error"]["code"] == "MailboxNotEnabledForRESTAPI"


def test_a_scenario_can_generate_its_organisation(emulator, token):
    spec = scenario()
    spec["tenants"][0]["population"] = {"users": 30, "data": SMALL, "departments": ["A", "B"]}
    emulator.control.load_scenario(spec)
    emulator.control.grant_consent(CONTOSO, CLIENT_ID)
    token = app_token(emulator)
    names = {g["displayName"] for g in every(emulator, token, "groups")}
    assert names == {"A", "B", "All Staff", "All Company"}


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def test_a_thousand_user_tenant_is_quick_to_build_and_small(capsys):
    with running_emulator(copy.deepcopy(scenario())) as emu:
        emu.control.grant_consent(CONTOSO, CLIENT_ID)
        idle = rss_mb(emu.process.pid)
        started = time.perf_counter()
        made = emu.control.add_population(
            CONTOSO, users=1000, data={"messages": 200, "events": 50, "contacts": 30, "files": 20}
        )
        built = time.perf_counter() - started
        loaded = rss_mb(emu.process.pid)
        token = app_token(emu)
        users = every(emu, token, "users?$top=999&$select=id")
        assert len(users) == 1003
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        started = time.perf_counter()
        for user in users[3:]:
            page = http.get(
                f"{emu.graph_url}/v1.0/users/{user['id']}/mailFolders/inbox/messages?$top=50",
                timeout=30,
            )
            assert page.status_code == 200 and len(page.json()["value"]) == 50
        touched = time.perf_counter() - started
        opened = rss_mb(emu.process.pid)
    with capsys.disabled():
        print(
            f"\n1,000 users x (200 messages, 50 events, 30 contacts, 20 files): built in "
            f"{built:.2f} s ({made['seconds']:.2f} s in the emulator); RSS {idle:.0f} MB idle, "
            f"{loaded:.0f} MB built, {opened:.0f} MB after a 50-message page of every inbox "
            f"({touched:.1f} s)"
        )
    assert made["seconds"] < 2 and loaded - idle < 50 and opened - idle < 150
