"""Client credentials, admin consent and the directory (users and groups with delta)."""

from __future__ import annotations

import requests

from tests.emulator.conftest import (
    ADELE,
    ALEX,
    CLIENT_ID,
    CONTOSO,
    FABRIKAM,
    SECRET,
    app_token,
    graph_get,
)

DEFAULT = "https://graph.microsoft.com/.default"


def client_credentials(emu, tenant=CONTOSO, scope=DEFAULT):
    return requests.post(
        f"{emu.login_url}/{tenant}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "scope": scope,
        },
        timeout=10,
    )


def test_client_credentials_give_a_token_without_refresh_token(emulator):
    body = client_credentials(emulator).json()
    assert body["token_type"] == "Bearer" and body["access_token"]
    assert "refresh_token" not in body and "id_token" not in body


def test_client_credentials_refuse_common_and_named_scopes(emulator):
    assert client_credentials(emulator, "common").json()["error_codes"] == [9001023]
    named = client_credentials(emulator, scope="User.Read.All").json()
    assert named["error"] == "invalid_scope" and named["error_codes"] == [70011]


def test_directory_needs_admin_consent(emulator):
    token = app_token(emulator)
    denied = graph_get(emulator, token, "users")
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "Authorization_RequestDenied"
    emulator.control.grant_consent(CONTOSO, CLIENT_ID)
    token = app_token(emulator)
    users = graph_get(emulator, token, "users")
    assert users.status_code == 200
    assert {u["id"] for u in users.json()["value"]} >= {ADELE, ALEX}
    assert users.headers["x-ms-resource-unit"] == "2"


def test_app_not_consented_in_a_foreign_tenant_is_700016(emulator):
    body = client_credentials(emulator, FABRIKAM).json()
    assert body["error_codes"] == [700016]


def test_users_delta_pages_changes_and_removals(emulator):
    emulator.control.grant_consent(CONTOSO, CLIENT_ID)
    token = app_token(emulator)
    first = graph_get(
        emulator,
        token,
        "users/delta?$select=displayName,jobTitle",
        headers={"Prefer": "odata.maxpagesize=2"},
    ).json()
    assert first["@odata.context"].endswith("$metadata#users")
    seen = list(first["value"])
    page = first
    while "@odata.nextLink" in page:
        page = graph_get(emulator, token, page["@odata.nextLink"]).json()
        seen.extend(page["value"])
    assert len(seen) == 3 and set(seen[0]) == {"id", "displayName", "jobTitle"}
    delta_link = page["@odata.deltaLink"]
    assert "$deltatoken=" in delta_link
    nothing = graph_get(emulator, token, delta_link).json()
    assert nothing["value"] == []
    emulator.control.update_user(ALEX, job_title="Director")
    emulator.control.delete_user("diego.siciliani@contoso.example")
    changes = graph_get(emulator, token, nothing["@odata.deltaLink"]).json()
    by_id = {item["id"]: item for item in changes["value"]}
    assert by_id[ALEX]["jobTitle"] == "Director"
    removed = [i for i in changes["value"] if "@removed" in i]
    assert removed and removed[0]["@removed"] == {"reason": "deleted"}


def test_groups_delta_reports_member_changes(emulator):
    emulator.control.grant_consent(CONTOSO, CLIENT_ID)
    token = app_token(emulator)
    first = graph_get(emulator, token, "groups/delta").json()
    group = first["value"][0]
    assert len(group["members@delta"]) == 3
    emulator.control.update_group(group["id"], members=[ADELE])
    second = graph_get(emulator, token, first["@odata.deltaLink"]).json()
    members = second["value"][0]["members@delta"]
    assert sum(1 for m in members if "@removed" in m) == 2


def test_latest_delta_token_starts_from_now(emulator):
    emulator.control.grant_consent(CONTOSO, CLIENT_ID)
    token = app_token(emulator)
    latest = graph_get(emulator, token, "users/delta?$deltatoken=latest").json()
    assert latest["value"] == [] and "@odata.deltaLink" in latest
