"""The connect flow against the emulator over HTTP, every path ending on a clear page."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection as db
from django.urls import reverse
from django.utils import timezone

from connections.models import AuditEvent, AuthorizationAttempt, ClientSecret, Connection
from tests.conftest import ADELE, ALEX, MS_CLIENT_ID, MS_SECRET_ID, MS_TENANT
from tests.flows import connect, follow_back, press_connect

pytestmark = pytest.mark.django_db


def raw_tokens(pk: int) -> tuple[str | None, str | None]:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT access_token, refresh_token FROM connections_connection WHERE id = %s", [pk]
        )
        return cursor.fetchone()


def test_authorize_url_carries_pkce_state_nonce_and_scopes(client, contoso):
    url = urlsplit(press_connect(client, contoso.member, contoso.app))
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert url.path == "/organizations/oauth2/v2.0/authorize"
    assert query["scope"].split() == [
        "openid",
        "profile",
        "email",
        "offline_access",
        "User.Read",
        "Mail.Read",
        "Calendars.Read",
        "Contacts.Read",
        "Files.Read",
    ]
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["response_mode"] == "form_post"
    assert query["redirect_uri"] == "http://127.0.0.1:8000/connections/callback/"
    attempt = AuthorizationAttempt.objects.get(state=query["state"])
    assert len(attempt.state) >= 43  # 256 bits, url-safe base64
    assert attempt.nonce == query["nonce"]
    assert attempt.user == contoso.member
    assert timedelta(minutes=9) < attempt.expires_at - timezone.now() <= timedelta(minutes=10)


def test_connect_stores_an_encrypted_validated_connection(client, microsoft, contoso):
    response = connect(client, microsoft, contoso.member, contoso.app)
    assert response.status_code == 302 and response["Location"] == reverse("connections:mine")
    connection = Connection.objects.get()
    assert (connection.ms_tenant_id, connection.ms_object_id) == (MS_TENANT, ADELE)
    assert connection.user == contoso.member
    assert connection.user_principal_name == "adele.vance@contoso.example"
    assert connection.display_name == "Adele Vance"
    assert connection.status == Connection.Status.ACTIVE
    assert "Mail.Read" in connection.granted_scopes.split()
    assert microsoft.control.introspect(connection.access_token)["user_id"] == ADELE
    access, refresh = raw_tokens(connection.pk)
    assert access.startswith("gAAAA") and connection.access_token not in access
    assert refresh.startswith("gAAAA") and connection.refresh_token not in refresh
    attempt = AuthorizationAttempt.objects.get()
    assert attempt.outcome == "succeeded" and attempt.connection == connection
    assert AuditEvent.objects.filter(kind="connected", connection=connection).exists()

    page = client.get(reverse("connections:mine"))
    assert "adele.vance@contoso.example" in page.text and "Active" in page.text
    assert MS_TENANT in page.text


def test_query_response_mode_works_too(client, microsoft, contoso):
    contoso.app.response_mode = "query"
    contoso.app.save()
    response = connect(client, microsoft, contoso.member, contoso.app)
    assert response.status_code == 302
    assert Connection.objects.filter(ms_object_id=ADELE).exists()


def test_cancel_explains_and_stores_nothing(client, microsoft, contoso):
    response = connect(client, microsoft, contoso.member, contoso.app, action="cancel")
    assert response.status_code == 400
    assert "Sign-in cancelled" in response.text
    assert not Connection.objects.exists()
    attempt = AuthorizationAttempt.objects.get()
    assert attempt.outcome == "cancelled" and attempt.error_code == "AADSTS65004"


@pytest.mark.parametrize("state", ["", "forged-state-that-was-never-issued"])
def test_forged_or_missing_state_is_400_and_stores_nothing(client, contoso, state):
    client.force_login(contoso.member)
    response = client.get(reverse("connections:callback"), {"state": state, "code": "x"})
    assert response.status_code == 400
    assert "cannot be used" in response.text
    assert not Connection.objects.exists()


def test_replayed_state_is_refused(client, microsoft, contoso):
    authorize_url = press_connect(client, contoso.member, contoso.app)
    outcome = microsoft.control.sign_in(authorize_url, ADELE)
    assert follow_back(client, outcome).status_code == 302
    Connection.objects.all().delete()
    again = follow_back(client, outcome)
    assert again.status_code == 400
    assert "can be used once" in again.text
    assert not Connection.objects.exists()


def test_expired_state_is_refused(client, microsoft, contoso):
    authorize_url = press_connect(client, contoso.member, contoso.app)
    AuthorizationAttempt.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = follow_back(client, microsoft.control.sign_in(authorize_url, ADELE))
    assert response.status_code == 400 and "expired" in response.text
    assert not Connection.objects.exists()


def test_another_users_state_is_refused(client, microsoft, contoso):
    authorize_url = press_connect(client, contoso.member, contoso.app)
    outcome = microsoft.control.sign_in(authorize_url, ADELE)
    client.force_login(contoso.other)
    response = follow_back(client, outcome)
    assert response.status_code == 400 and "belongs to someone else" in response.text
    assert not Connection.objects.exists()
    assert AuthorizationAttempt.objects.get().used_at is None  # still usable by its owner


def test_code_replay_gives_aadsts54005_page(client, microsoft, contoso):
    authorize_url = press_connect(client, contoso.member, contoso.app)
    outcome = microsoft.control.sign_in(authorize_url, ADELE)
    assert follow_back(client, outcome).status_code == 302
    # The same code under a fresh, valid state: Microsoft refuses the second redemption.
    fresh = press_connect(client, contoso.member, contoso.app)
    fields = dict(outcome["fields"], state=parse_qs(urlsplit(fresh).query)["state"][0])
    attempt = AuthorizationAttempt.objects.get(state=fields["state"])
    first = AuthorizationAttempt.objects.exclude(pk=attempt.pk).get()
    AuthorizationAttempt.objects.filter(pk=attempt.pk).update(
        code_verifier=first.code_verifier, nonce=first.nonce
    )
    response = client.post(reverse("connections:callback"), fields)
    assert response.status_code == 400
    assert "AADSTS54005" in response.text and "already used" in response.text


def test_wrong_nonce_is_refused(client, microsoft, contoso):
    authorize_url = press_connect(client, contoso.member, contoso.app)
    AuthorizationAttempt.objects.update(nonce="not-the-nonce-that-was-sent")
    response = follow_back(client, microsoft.control.sign_in(authorize_url, ADELE))
    assert response.status_code == 400
    assert "nonce does not match" in response.text
    assert not Connection.objects.exists()


def test_wrong_issuer_is_refused(client, microsoft, contoso):
    # The same emulator reached as "localhost": its tokens name 127.0.0.1 as issuer.
    contoso.app.login_base_url = microsoft.login_url.replace("127.0.0.1", "localhost")
    contoso.app.save()
    response = connect(client, microsoft, contoso.member, contoso.app)
    assert response.status_code == 400
    assert "wrong issuer" in response.text
    assert not Connection.objects.exists()


def test_expired_secret_explains_the_app_is_broken(client, microsoft, contoso):
    microsoft.control.set_secret_expiry(MS_CLIENT_ID, MS_SECRET_ID, expired=True)
    response = connect(client, microsoft, contoso.member, contoso.app)
    assert response.status_code == 400
    assert "AADSTS7000222" in response.text and "has expired" in response.text
    assert not Connection.objects.exists()


def test_consent_required_offers_admin_consent_to_the_tenant_admin(client, microsoft, contoso):
    contoso.app.default_prompt = "none"
    contoso.app.save()
    response = connect(client, microsoft, contoso.admin, contoso.app)
    assert response.status_code == 400
    assert "Consent needed" in response.text and "AADSTS65001" in response.text
    assert reverse("connections:admin_consent", args=[contoso.app.pk]) in response.text
    member_page = connect(client, microsoft, contoso.member, contoso.app)
    assert "Ask your Graphport administrator" in member_page.text


def test_consent_required_offers_no_admin_consent_for_an_app_without_application_permissions(
    client, microsoft, contoso
):
    contoso.app.default_prompt = "none"
    contoso.app.use_application_permissions = False
    contoso.app.save()
    response = connect(client, microsoft, contoso.admin, contoso.app)
    assert response.status_code == 400 and "AADSTS65001" in response.text
    assert reverse("connections:admin_consent", args=[contoso.app.pk]) not in response.text
    # Graphport cannot grant delegated consent for them: the page says where it is granted.
    assert "Enterprise applications" in response.text
    assert contoso.app.client_id in response.text
    member_page = connect(client, microsoft, contoso.member, contoso.app)
    assert "Consent on behalf of your organization" in member_page.text


def test_no_refresh_token_says_offline_access_was_not_granted(client, microsoft, contoso):
    # A consent screen that drops offline_access: the scope Microsoft grants decides.
    authorize_url = press_connect(client, contoso.member, contoso.app)
    trimmed = authorize_url.replace("offline_access+", "").replace("offline_access%20", "")
    assert "offline_access" not in trimmed
    response = follow_back(client, microsoft.control.sign_in(trimmed, ADELE))
    assert response.status_code == 400
    assert "offline_access was not granted" in response.text
    assert not Connection.objects.exists()


def test_reconnect_updates_the_same_connection(client, microsoft, contoso):
    connect(client, microsoft, contoso.member, contoso.app)
    connection = Connection.objects.get()
    Connection.objects.filter(pk=connection.pk).update(
        status=Connection.Status.RECONNECT_NEEDED, status_reason="grant revoked"
    )
    response = client.post(reverse("connections:reconnect", args=[connection.pk]))
    outcome = microsoft.control.sign_in(response["Location"], ADELE)
    assert follow_back(client, outcome).status_code == 302
    connection.refresh_from_db()
    assert Connection.objects.count() == 1
    assert connection.status == Connection.Status.ACTIVE and connection.status_reason == ""


def test_account_connected_by_another_member_is_refused(client, microsoft, contoso):
    connect(client, microsoft, contoso.member, contoso.app)
    response = connect(client, microsoft, contoso.other, contoso.app)
    assert response.status_code == 400
    assert "already connected by another member" in response.text
    assert Connection.objects.get().user == contoso.member


def test_members_cannot_see_or_touch_others_connections(client, microsoft, contoso):
    connect(client, microsoft, contoso.member, contoso.app, user=ALEX)
    client.get(reverse("connections:mine"))  # the success message is shown, and gone
    connection = Connection.objects.get()
    client.force_login(contoso.other)
    assert "alex.wilber" not in client.get(reverse("connections:mine")).text
    for name in ("reconnect", "disconnect"):
        url = reverse(f"connections:{name}", args=[connection.pk])
        assert client.get(url).status_code in (404, 405)
        assert client.post(url).status_code == 404
    assert Connection.objects.get().status == Connection.Status.ACTIVE


def test_disconnect_deletes_tokens_and_keeps_history(client, microsoft, contoso):
    connect(client, microsoft, contoso.member, contoso.app)
    connection = Connection.objects.get()
    url = reverse("connections:disconnect", args=[connection.pk])
    assert "Disconnect" in client.get(url).text
    response = client.post(url)
    assert "remove the app" in response.text
    assert raw_tokens(connection.pk) == (None, None)
    connection.refresh_from_db()
    assert connection.status == Connection.Status.REVOKED
    kinds = list(AuditEvent.objects.filter(connection=connection).values_list("kind", flat=True))
    assert set(kinds) == {"connected", "disconnected"}


def test_connect_to_another_tenants_app_is_404(client, contoso, acme):
    client.force_login(contoso.member)
    response = client.post(reverse("connections:connect", args=[acme.app.pk]))
    assert response.status_code == 404
    assert not AuthorizationAttempt.objects.exists()


def test_return_path_is_same_origin_only(client, microsoft, contoso):
    client.force_login(contoso.member)
    for evil in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        client.post(reverse("connections:connect", args=[contoso.app.pk]), {"next": evil})
    assert set(AuthorizationAttempt.objects.values_list("return_path", flat=True)) == {
        reverse("connections:mine")
    }


def test_admin_consent_creates_a_verified_app_only_connection(client, microsoft, contoso):
    client.force_login(contoso.admin)
    response = client.post(reverse("connections:admin_consent", args=[contoso.app.pk]))
    consent_url = response["Location"]
    assert urlsplit(consent_url).path == "/organizations/v2.0/adminconsent"
    outcome = microsoft.control.sign_in(consent_url, "adele.vance@contoso.example")
    done = follow_back(client, outcome)
    assert done.status_code == 302
    assert done["Location"] == reverse("admin:connections_entraapp_change", args=[contoso.app.pk])
    connection = Connection.objects.get(kind=Connection.Kind.APPLICATION)
    assert connection.ms_tenant_id == MS_TENANT and connection.ms_object_id == ""
    token = microsoft.control.introspect(connection.access_token)
    assert token["user_id"] is None and token["tenant_id"] == MS_TENANT
    assert AuditEvent.objects.filter(kind="consent_granted").exists()


def test_admin_consent_declined_is_explained(client, microsoft, contoso):
    client.force_login(contoso.admin)
    consent_url = client.post(reverse("connections:admin_consent", args=[contoso.app.pk]))[
        "Location"
    ]
    outcome = microsoft.control.sign_in(consent_url, ADELE, action="cancel")
    response = follow_back(client, outcome)
    assert response.status_code == 400 and "cancelled" in response.text
    assert not Connection.objects.exists()
    assert AuditEvent.objects.filter(kind="consent_failed").exists()


def test_members_cannot_start_admin_consent(client, contoso):
    client.force_login(contoso.member)
    response = client.post(reverse("connections:admin_consent", args=[contoso.app.pk]))
    assert response.status_code == 404


def test_secret_rotation_falls_back_to_the_older_secret(client, microsoft, contoso):
    ClientSecret.objects.create(
        app=contoso.app,
        value="a-new-secret-not-yet-in-azure",
        hint="a-n",
        expires_on=timezone.localdate() + timedelta(days=700),
    )
    response = connect(client, microsoft, contoso.member, contoso.app)
    assert response.status_code == 302
    assert Connection.objects.filter(ms_object_id=ADELE).exists()
