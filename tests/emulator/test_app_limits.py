"""Throttling beyond one mailbox: the app across all tenants, a budget per mailbox for every
mailbox, the directory and OneDrive per app + tenant, subscription writes; limits set from the
control API or the scenario."""

from __future__ import annotations

import pytest
import requests

from emulator.control import ControlError
from tests.emulator.conftest import (
    ADELE,
    ALEX,
    CLIENT_ID,
    CONTOSO,
    FABRIKAM,
    app_token,
    graph_get,
    scenario,
)
from tests.emulator.test_subscriptions import subscribe

MEGAN = "megan.bowen@fabrikam.example"


@pytest.fixture
def tokens(emulator):
    emulator.control.grant_consent(CONTOSO, CLIENT_ID)
    emulator.control.grant_consent(FABRIKAM, CLIENT_ID)
    return app_token(emulator), app_token(emulator, FABRIKAM)


def test_the_app_shares_one_request_budget_across_all_tenants(emulator, tokens):
    contoso, fabrikam = tokens
    emulator.control.throttle_app(CLIENT_ID, budget=4, window_seconds=60)
    assert graph_get(emulator, contoso, f"users/{ADELE}/messages").status_code == 200
    assert graph_get(emulator, contoso, "users").status_code == 200
    assert graph_get(emulator, fabrikam, f"users/{MEGAN}/messages").status_code == 200
    assert graph_get(emulator, fabrikam, f"users/{MEGAN}/drive/root").status_code == 200
    refused = graph_get(emulator, fabrikam, f"users/{MEGAN}")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "TooManyRequests"
    assert refused.json()["error"]["innerError"]["status"] == "429"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    counters = emulator.control.app_counters(CLIENT_ID)
    assert (counters["requests"], counters["throttled_429"]) == (5, 1)


def test_batch_items_each_spend_the_app_budget(emulator, tokens):
    emulator.control.throttle_app(CLIENT_ID, budget=3, window_seconds=60)
    items = [{"id": str(i), "method": "GET", "url": f"/users/{ADELE}"} for i in range(5)]
    answer = requests.post(
        f"{emulator.graph_url}/v1.0/$batch",
        json={"requests": items},
        headers={"Authorization": f"Bearer {tokens[0]}"},
        timeout=30,
    ).json()
    assert [r["status"] for r in answer["responses"]] == [200, 200, 200, 429, 429]


def test_every_mailbox_has_its_own_budget_for_the_app(emulator, tokens):
    made = emulator.control.add_population(CONTOSO, users=30, data={"messages": 3})
    emulator.control.throttle_mailbox(CLIENT_ID, budget=2, window_seconds=60)
    token = tokens[0]
    users = graph_get(emulator, token, "users?$top=999&$select=id").json()["value"][3:]
    assert len(users) == made["users"] == 30
    for user in users:
        statuses = [
            graph_get(emulator, token, f"users/{user['id']}/messages").status_code for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
    counters = emulator.control.counters()["mailboxes"]
    assert {f"{CLIENT_ID}:{u['id']}" for u in users} <= set(counters)
    assert all(counters[f"{CLIENT_ID}:{u['id']}"]["budget_429"] == 1 for u in users)


def test_another_app_reading_the_same_mailbox_has_its_own_budget(emulator, tokens):
    other = emulator.control.add_app(
        name="Archiver", home_tenant=CONTOSO, application_permissions=["Calendars.Read"]
    )["client_id"]
    secret = emulator.control.add_secret(other)["value"]
    emulator.control.grant_consent(CONTOSO, other)
    theirs = requests.post(
        f"{emulator.login_url}/{CONTOSO}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": other,
            "client_secret": secret,
            "scope": "https://graph.microsoft.com/.default",
        },
        timeout=10,
    ).json()["access_token"]
    emulator.control.throttle_mailbox("*", ALEX, budget=1, window_seconds=60)
    for token in (tokens[0], theirs):
        statuses = [graph_get(emulator, token, f"users/{ALEX}/events").status_code for _ in "ab"]
        assert statuses == [200, 429]


def test_directory_resource_units_follow_the_tenants_size(emulator, tokens):
    token = tokens[0]
    graph_get(emulator, token, "users?$select=id")
    assert emulator.control.counters()["tenants"][f"{CLIENT_ID}:{CONTOSO}"]["limit"] == 3500
    emulator.control.add_population(CONTOSO, users=100, data={})
    graph_get(emulator, token, "users?$select=id")
    assert emulator.control.counters()["tenants"][f"{CLIENT_ID}:{CONTOSO}"]["limit"] == 5000
    emulator.control.add_population(CONTOSO, users=500, data={})
    response = graph_get(emulator, token, "groups?$top=5")
    assert response.headers["x-ms-resource-unit"] == "1"
    assert emulator.control.counters()["tenants"][f"{CLIENT_ID}:{CONTOSO}"]["limit"] == 8000


def test_directory_budget_and_window_can_be_tightened(emulator, tokens):
    emulator.control.throttle_tenant(CLIENT_ID, CONTOSO, ru_budget=6, window_seconds=30)
    statuses = [graph_get(emulator, tokens[0], "users").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = graph_get(emulator, tokens[0], "users")
    assert refused.headers["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
    assert 1 <= int(refused.headers["Retry-After"]) <= 30
    # Another tenant's directory is another budget.
    assert graph_get(emulator, tokens[1], "users").status_code == 200


def test_onedrive_resource_units_per_app_and_tenant(emulator, tokens):
    contoso, fabrikam = tokens
    emulator.control.throttle_drive(CLIENT_ID, CONTOSO, ru_budget=10, window_seconds=60)
    drive = f"users/{ADELE}/drive"
    first = graph_get(emulator, contoso, f"{drive}/root/delta?$top=5")  # no token: 2
    assert first.status_code == 200 and "RateLimit-Limit" not in first.headers
    graph_get(emulator, contoso, first.json()["@odata.nextLink"])  # with a token: 1
    graph_get(emulator, contoso, f"{drive}/root/children")  # a listing: 2
    graph_get(emulator, contoso, f"{drive}/root")  # one item: 1
    near = graph_get(emulator, contoso, f"{drive}/root/children")  # 8 of 10: 80 %
    assert near.status_code == 200
    assert (near.headers["RateLimit-Limit"], near.headers["RateLimit-Remaining"]) == ("10", "2")
    assert 0 <= int(near.headers["RateLimit-Reset"]) <= 60
    graph_get(emulator, contoso, f"{drive}/root/children")
    refused = graph_get(emulator, contoso, f"{drive}/root")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["code"], error["innerError"]["code"]) == (
        "activityLimitReached",
        "throttledRequest",
    )
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Remaining"] == "0"
    # Outlook and another tenant's OneDrive are other budgets.
    assert graph_get(emulator, contoso, f"users/{ADELE}/messages").status_code == 200
    assert graph_get(emulator, fabrikam, f"users/{MEGAN}/drive/root").status_code == 200
    counters = emulator.control.drive_counters(CLIENT_ID, CONTOSO)
    assert (counters["resource_units"], counters["throttled_429"]) == (11, 1)
    assert emulator.control.drive_counters(CLIENT_ID, FABRIKAM)["limit"] == 1200


def test_subscription_writes_per_app_and_tenant(emulator, tokens, receiver):
    emulator.control.throttle_subscriptions(CLIENT_ID, tenant_budget=2, app_budget=4)
    resource = {"resource": f"users/{ADELE}/mailFolders('inbox')/messages"}
    statuses = [subscribe(emulator, tokens[0], receiver, **resource).status_code for _ in range(3)]
    assert statuses == [201, 201, 429]
    other = {"resource": f"users/{MEGAN}/mailFolders('inbox')/messages"}
    assert subscribe(emulator, tokens[1], receiver, **other).status_code == 201
    # The app's own budget (4 across tenants, the refused write included) is spent now;
    # reading is not a write.
    assert subscribe(emulator, tokens[1], receiver, **other).status_code == 429
    assert graph_get(emulator, tokens[0], "subscriptions").status_code == 200


def test_a_scenario_sets_the_limits_and_the_control_api_shows_them(emulator):
    spec = scenario()
    spec["throttling"] = {
        "app": {"client_id": CLIENT_ID, "budget": 2},
        "mailbox": [{"mailbox": "alex.wilber@contoso.example", "max_in_flight": 1}],
        "drive": {"tenant": "contoso.example", "ru_budget": 100},
    }
    emulator.control.load_scenario(spec)
    limits = emulator.control.throttling()
    assert limits["app"][f"{CLIENT_ID}:*"] == {"budget": 2, "window_seconds": 10}
    assert limits["mailbox"][f"*:{ALEX}"]["max_in_flight"] == 1
    assert limits["drive"][f"*:{CONTOSO}"]["ru_budget"] == 100
    emulator.control.grant_consent(CONTOSO, CLIENT_ID)
    token = app_token(emulator)
    statuses = [graph_get(emulator, token, f"users/{ADELE}").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_unknown_scopes_and_fields_are_refused(emulator):
    with pytest.raises(ControlError, match="unknown throttling scope"):
        emulator.control.throttle("everything", budget=1)
    with pytest.raises(ControlError, match="unknown drive throttling fields"):
        emulator.control.throttle("drive", budget=1)
    with pytest.raises(ControlError, match="unknown user"):
        emulator.control.throttle_mailbox(CLIENT_ID, "nobody@contoso.example", budget=1)
