"""Application permissions for every user: the app-only token says what was granted, an
Exchange application access policy closes chosen mailboxes to the app, and an administrator can
revoke the admin consent."""

from __future__ import annotations

import jwt
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
    connect,
    graph_get,
    scenario,
)

MEGAN = "megan.bowen@fabrikam.example"

RAOP = (
    "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy "
    "settings."
)


def test_an_app_only_token_is_a_jwt_whose_roles_are_the_granted_permissions(emulator):
    emulator.control.grant_consent(CONTOSO, CLIENT_ID, scopes=["Mail.Read", "User.Read.All"])
    claims = jwt.decode(app_token(emulator), options={"verify_signature": False})
    assert sorted(claims["roles"]) == ["Mail.Read", "User.Read.All"]
    assert claims["tid"] == CONTOSO and claims["appid"] == CLIENT_ID
    assert claims["aud"] == "https://graph.microsoft.com"


def test_a_denied_mailbox_is_closed_to_the_app_alone(emulator, relaxed_scope):
    emulator.control.grant_consent(CONTOSO, CLIENT_ID, scopes=["Mail.Read", "Files.Read.All"])
    policy = emulator.control.set_access_policy(CLIENT_ID, deny=["alex.wilber@contoso.example"])
    assert policy == {"tenant": CONTOSO, "mode": "deny", "users": [ALEX], "groups": []}
    token = app_token(emulator)

    refused = graph_get(emulator, token, f"users/{ALEX}/messages")
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert (error["code"], error["message"]) == ("ErrorAccessDenied", RAOP)
    assert graph_get(emulator, token, f"users/{ADELE}/messages").status_code == 200
    # Exchange's policies cover Outlook only: his OneDrive stays open.
    assert graph_get(emulator, token, f"users/{ALEX}/drive/root/children").status_code == 200
    created = requests.post(
        f"{emulator.graph_url}/v1.0/subscriptions",
        json={
            "changeType": "created",
            "notificationUrl": "https://portal.example/graph/notifications/",
            "resource": f"users/{ALEX}/mailFolders('inbox')/messages",
            "expirationDateTime": "2099-01-01T00:00:00Z",
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert created.status_code == 403 and created.json()["error"]["message"] == RAOP

    # RestrictAccess: only the listed mailboxes are open.
    emulator.control.set_access_policy(CLIENT_ID, restrict_to=[ALEX])
    assert graph_get(emulator, token, f"users/{ALEX}/messages").status_code == 200
    assert graph_get(emulator, token, f"users/{ADELE}/messages").status_code == 403
    assert emulator.control.set_access_policy(CLIENT_ID) is None
    assert graph_get(emulator, token, f"users/{ADELE}/messages").status_code == 200


def test_revoked_admin_consent_leaves_later_tokens_without_roles(emulator):
    emulator.control.grant_consent(CONTOSO, CLIENT_ID, scopes=["Mail.Read", "User.Read.All"])
    before = app_token(emulator)
    assert emulator.control.revoke_admin_consent(CONTOSO, CLIENT_ID)
    after = jwt.decode(app_token(emulator), options={"verify_signature": False})
    assert after["roles"] == []
    # A token issued before keeps its roles until it expires, as Microsoft's do.
    assert graph_get(emulator, before, f"users/{ADELE}/messages").status_code == 200
    emulator.control.grant_consent(CONTOSO, CLIENT_ID, scopes=["User.Read.All"])
    again = jwt.decode(app_token(emulator), options={"verify_signature": False})
    assert again["roles"] == ["User.Read.All"]


def test_a_policy_closes_mail_calendar_and_contacts_even_inside_a_batch(emulator, relaxed_scope):
    emulator.control.grant_consent(CONTOSO, CLIENT_ID)
    emulator.control.set_access_policy(CLIENT_ID, deny=[ALEX])
    token = app_token(emulator)
    urls = {
        "mail": f"/users/{ALEX}/mailFolders/inbox/messages/delta",
        "events": f"/users/{ALEX}/calendarView?startDateTime=2025-01-01T00:00:00Z"
        "&endDateTime=2025-02-01T00:00:00Z",
        "contacts": f"/users/{ALEX}/contacts",
        "drive": f"/users/{ALEX}/drive/root/delta",
        "profile": f"/users/{ALEX}",
        "other": f"/users/{ADELE}/events",
    }
    answer = requests.post(
        f"{emulator.graph_url}/v1.0/$batch",
        json={"requests": [{"id": k, "method": "GET", "url": u} for k, u in urls.items()]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()
    statuses = {r["id"]: r["status"] for r in answer["responses"]}
    assert statuses == {
        "mail": 403,
        "events": 403,
        "contacts": 403,
        "drive": 200,
        "profile": 200,
        "other": 200,
    }
    refused = next(r for r in answer["responses"] if r["id"] == "events")
    assert refused["body"]["error"]["message"] == RAOP


def test_a_policy_leaves_delegated_calls_alone(emulator, relaxed_scope):
    emulator.control.set_access_policy(CLIENT_ID, restrict_to=[ADELE])
    delegated = connect(emulator, user=ALEX)[1]["access_token"]
    assert graph_get(emulator, delegated, "me/messages").status_code == 200
    assert graph_get(emulator, delegated, "me/events").status_code == 200


def test_a_policy_lives_in_one_tenants_exchange_organisation(emulator):
    emulator.control.grant_consent(CONTOSO, CLIENT_ID)
    emulator.control.grant_consent(FABRIKAM, CLIENT_ID)
    policy = emulator.control.set_access_policy(CLIENT_ID, restrict_to=[ADELE])
    assert policy["tenant"] == CONTOSO
    contoso, fabrikam = app_token(emulator), app_token(emulator, FABRIKAM)
    assert graph_get(emulator, contoso, f"users/{ALEX}/messages").status_code == 403
    # Fabrikam's Exchange has no policy for the app: all its mailboxes stay open.
    assert graph_get(emulator, fabrikam, f"users/{MEGAN}/messages").status_code == 200
    # An empty RestrictAccess list names no mailbox, so it needs its tenant.
    emulator.control.set_access_policy(CLIENT_ID, restrict_to=[], tenant="fabrikam.example")
    assert graph_get(emulator, fabrikam, f"users/{MEGAN}/messages").status_code == 403
    assert emulator.control.set_access_policy(CLIENT_ID, tenant=CONTOSO) is None
    assert graph_get(emulator, contoso, f"users/{ALEX}/messages").status_code == 200
    assert graph_get(emulator, fabrikam, f"users/{MEGAN}/messages").status_code == 403
    with pytest.raises(ControlError):
        emulator.control.set_access_policy(CLIENT_ID, deny=[ALEX, MEGAN])


def test_a_policy_scoped_to_a_group_follows_its_membership(emulator):
    emulator.control.grant_consent(CONTOSO, CLIENT_ID)
    group = emulator.control.add_group(
        CONTOSO, display_name="Legal hold", members=[ALEX], security_enabled=True
    )["id"]
    policy = emulator.control.set_access_policy(CLIENT_ID, deny=["legalhold@contoso.example"])
    assert policy["groups"] == [group] and policy["users"] == []
    token = app_token(emulator)
    assert graph_get(emulator, token, f"users/{ALEX}/contacts").status_code == 403
    assert graph_get(emulator, token, f"users/{ADELE}/contacts").status_code == 200
    emulator.control.update_group(group, members=[ADELE])
    assert graph_get(emulator, token, f"users/{ALEX}/contacts").status_code == 200
    assert graph_get(emulator, token, f"users/{ADELE}/contacts").status_code == 403


def test_a_scenario_can_start_with_access_policies(emulator):
    spec = scenario()
    spec["access_policies"] = [{"client_id": CLIENT_ID, "deny": ["alex.wilber@contoso.example"]}]
    emulator.control.load_scenario(spec)
    emulator.control.grant_consent(CONTOSO, CLIENT_ID)
    assert emulator.control.state()["access_policies"] == [
        {"client_id": CLIENT_ID, "tenant": CONTOSO, "mode": "deny", "users": [ALEX], "groups": []}
    ]
    token = app_token(emulator)
    assert graph_get(emulator, token, f"users/{ALEX}/messages").status_code == 403
