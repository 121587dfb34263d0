"""Application permissions for every user: the app-only token says what was granted, an
Exchange application access policy closes chosen mailboxes to the app, and an administrator can
revoke the admin consent."""

from __future__ import annotations

import jwt
import requests

from tests.emulator.conftest import ADELE, ALEX, CLIENT_ID, CONTOSO, app_token, graph_get

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
    assert policy == {"mode": "deny", "users": [ALEX]}
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
