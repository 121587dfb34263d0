from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from connections.models import EntraApp

CLIENT_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def app(**fields) -> EntraApp:
    values = {"name": "Mail sync", "client_id": CLIENT_ID, "authority": "organizations"}
    values.update(fields)
    return EntraApp(**values)


def errors_of(entra_app: EntraApp) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        entra_app.full_clean(exclude=["tenant"])
    return caught.value.message_dict


def test_a_valid_app_is_normalised():
    entra_app = app(client_id=CLIENT_ID.upper(), delegated_scopes="User.Read, Mail.Read\nMail.Read")
    entra_app.full_clean(exclude=["tenant"])
    assert entra_app.client_id == CLIENT_ID
    assert entra_app.delegated_scopes == "User.Read Mail.Read"
    assert entra_app.requested_scopes == [
        "openid",
        "profile",
        "email",
        "offline_access",
        "User.Read",
        "Mail.Read",
    ]


@pytest.mark.parametrize("client_id", ["not-a-guid", "3fa85f64571745", "", "{3fa85f64-5717}"])
def test_client_id_must_be_a_guid(client_id):
    assert "client_id" in errors_of(app(client_id=client_id))


@pytest.mark.parametrize(
    "authority",
    [
        "common",
        "organizations",
        "consumers",
        "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "contoso.onmicrosoft.com",
        "Contoso.COM",
    ],
)
def test_authorities_accepted(authority):
    app(authority=authority).full_clean(exclude=["tenant"])


@pytest.mark.parametrize("authority", ["", "common/", "https://login.microsoftonline.com/x", "x"])
def test_authorities_refused(authority):
    assert "authority" in errors_of(app(authority=authority))


def test_default_mixed_with_named_scopes_is_refused_with_aadsts70011():
    messages = errors_of(app(delegated_scopes="https://graph.microsoft.com/.default Mail.Read"))[
        "delegated_scopes"
    ]
    assert any("AADSTS70011" in m and "cannot be combined" in m for m in messages)


def test_default_alone_with_openid_scopes_is_fine():
    app(delegated_scopes="https://graph.microsoft.com/.default offline_access").full_clean(
        exclude=["tenant"]
    )


def test_a_cloud_graph_uri_and_bare_names_are_one_resource():
    # Both mean Microsoft Graph; the only fault left is mixing .default with named scopes.
    messages = errors_of(
        app(
            delegated_scopes="https://graph.microsoft.com/.default Mail.Read",
            cloud="custom",
            login_base_url="https://login.example",
            graph_base_url="https://graph.example",
        )
    )["delegated_scopes"]
    assert len(messages) == 1 and "AADSTS70011" in messages[0]


def test_scopes_of_two_resources_are_refused():
    messages = errors_of(
        app(delegated_scopes="Mail.Read https://outlook.office.com/IMAP.AccessAsUser.All")
    )["delegated_scopes"]
    assert any("several resources" in m for m in messages)


def test_scope_with_odd_characters_is_refused():
    assert "delegated_scopes" in errors_of(app(delegated_scopes="Mail.Read <script>"))


def test_custom_cloud_needs_both_urls():
    errors = errors_of(app(cloud="custom", login_base_url="https://login.example"))
    assert errors["graph_base_url"] == ["Required for the custom cloud."]


def test_http_urls_are_refused_unless_allowed(settings):
    settings.MICROSOFT_ALLOW_HTTP = False
    errors = errors_of(
        app(
            cloud="custom", login_base_url="http://127.0.0.1:1", graph_base_url="http://127.0.0.1:2"
        )
    )
    assert "MICROSOFT_ALLOW_HTTP" in errors["login_base_url"][0]
    settings.MICROSOFT_ALLOW_HTTP = True
    settings.MICROSOFT_ALLOW_INTERNAL_HOSTS = True  # a local emulator's loopback address
    app(
        cloud="custom", login_base_url="http://127.0.0.1:1/", graph_base_url="http://127.0.0.1:2"
    ).full_clean(exclude=["tenant"])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://login.example", "Must be an https:// URL."),
        ("https://login.microsoftonline.com@login.example", "user name or password"),
        ("https://10.20.30.40", "internal address (10.20.30.40)"),
        ("https://[fe80::1]", "internal address (fe80::1)"),
    ],
)
def test_custom_urls_must_be_public_https_without_user_info(settings, url, message):
    settings.MICROSOFT_ALLOW_INTERNAL_HOSTS = False
    errors = errors_of(app(cloud="custom", login_base_url=url, graph_base_url=url))
    assert message in errors["login_base_url"][0]
    assert message in errors["graph_base_url"][0]


def test_custom_urls_are_refused_for_a_national_cloud():
    errors = errors_of(app(cloud="global", login_base_url="https://login.example"))
    assert "Only used with the custom cloud" in errors["login_base_url"][0]


@pytest.mark.parametrize("authority", ["common", "organizations", "consumers"])
def test_application_permissions_need_a_specific_tenant(authority):
    errors = errors_of(app(authority=authority, use_application_permissions=True))
    assert "AADSTS9001023" in errors["use_application_permissions"][0]
    app(authority="contoso.onmicrosoft.com", use_application_permissions=True).full_clean(
        exclude=["tenant"]
    )


def test_derived_urls_follow_cloud_and_authority(settings):
    settings.PORTAL_BASE_URL = "https://portal.example.com"
    entra_app = app(cloud="usgov_l5", authority="contoso.onmicrosoft.com", graph_version="beta")
    assert entra_app.redirect_uri == "https://portal.example.com/connections/callback/"
    assert entra_app.authorize_url == (
        "https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
    )
    assert entra_app.jwks_url == (
        "https://login.microsoftonline.us/contoso.onmicrosoft.com/discovery/v2.0/keys"
    )
    assert entra_app.graph_url == "https://dod-graph.microsoft.us/beta"
    assert entra_app.app_only_scope == "https://dod-graph.microsoft.us/.default"


def test_admin_consent_never_goes_to_common():
    assert app(authority="common").admin_consent_url == (
        "https://login.microsoftonline.com/organizations/v2.0/adminconsent"
    )
    assert app(cloud="china", authority="fabrikam.cn").metadata_url == (
        "https://login.chinacloudapi.cn/fabrikam.cn/v2.0/.well-known/openid-configuration"
    )
