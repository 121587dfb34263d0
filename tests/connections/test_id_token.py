"""ID-token validation with tokens the emulator really issued (docs/microsoft.md, "ID
tokens")."""

from __future__ import annotations

import base64
import secrets
import time
from datetime import datetime, timedelta
from urllib.parse import urlencode

import jwt
import pytest
import requests

from connections import idtoken
from connections.models import EntraApp
from tests.conftest import ADELE, MS_CLIENT_ID, MS_SECRET, MS_TENANT

pytestmark = pytest.mark.django_db
REDIRECT = "http://127.0.0.1:8000/connections/callback/"


def issue_id_token(microsoft, nonce: str = "the-nonce") -> str:
    """A code flow done by hand: what Microsoft sends a client that signs Adele in."""
    query = urlencode(
        {
            "client_id": MS_CLIENT_ID,
            "response_type": "code",
            "redirect_uri": REDIRECT,
            "scope": "openid profile offline_access User.Read",
            "state": secrets.token_urlsafe(8),
            "nonce": nonce,
        }
    )
    outcome = microsoft.control.sign_in(
        f"{microsoft.login_url}/organizations/oauth2/v2.0/authorize?{query}", ADELE
    )
    response = requests.post(
        f"{microsoft.login_url}/organizations/oauth2/v2.0/token",
        data={
            "grant_type": "authorization_code",
            "client_id": MS_CLIENT_ID,
            "client_secret": MS_SECRET,
            "code": outcome["params"]["code"],
            "redirect_uri": REDIRECT,
        },
        timeout=10,
    )
    return response.json()["id_token"]


@pytest.fixture
def app(contoso):
    return contoso.app


def test_a_genuine_token_gives_the_identity(microsoft, app):
    who = idtoken.validate(app, issue_id_token(microsoft), "the-nonce")
    assert (who.tenant_id, who.object_id) == (MS_TENANT, ADELE)
    assert who.username == "adele.vance@contoso.example"


def test_bad_signature(microsoft, app):
    header, payload, signature = issue_id_token(microsoft).split(".")
    forged = base64.urlsafe_b64encode(b"\x00" * 256).rstrip(b"=").decode()
    with pytest.raises(idtoken.InvalidIdToken, match="bad signature"):
        idtoken.validate(app, f"{header}.{payload}.{forged}", "the-nonce")


def test_tampered_claims_fail_the_signature(microsoft, app):
    header, payload, signature = issue_id_token(microsoft).split(".")
    claims = base64.urlsafe_b64decode(payload + "==").replace(b"Adele", b"Eve!!")
    tampered = base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
    with pytest.raises(idtoken.InvalidIdToken, match="bad signature"):
        idtoken.validate(app, f"{header}.{tampered}.{signature}", "the-nonce")


def test_wrong_audience(microsoft, app):
    other = EntraApp(
        client_id="0f9e8d7c-6b5a-4c3d-9e2f-1a0b9c8d7e6f",
        cloud="custom",
        login_base_url=app.login_base_url,
        graph_base_url=app.graph_base_url,
        authority="organizations",
    )
    with pytest.raises(idtoken.InvalidIdToken, match="wrong audience"):
        idtoken.validate(other, issue_id_token(microsoft), "the-nonce")


def test_wrong_nonce(microsoft, app):
    with pytest.raises(idtoken.InvalidIdToken, match="nonce does not match"):
        idtoken.validate(app, issue_id_token(microsoft), "another-nonce")


def test_token_from_another_tenant_than_the_pinned_one(microsoft, app):
    fabrikam = "6d2c1b0a-9e8f-4a7b-8c6d-5e4f3a2b1c0d"
    microsoft.control.add_tenant(id=fabrikam, domain="fabrikam.example", name="Fabrikam")
    token = issue_id_token(microsoft)
    app.authority = fabrikam
    with pytest.raises(idtoken.InvalidIdToken, match=f"not the app's {fabrikam}"):
        idtoken.validate(app, token, "the-nonce")


def test_a_domain_authority_is_pinned_through_its_metadata(microsoft, app):
    app.authority = "contoso.example"
    assert idtoken.expected_tenant(app) == MS_TENANT
    idtoken.validate(app, issue_id_token(microsoft), "the-nonce")


class Later(datetime):
    """PyJWT's clock, three hours on: past any ID token's lifetime."""

    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) + timedelta(hours=3)


def test_expired_token(microsoft, app, monkeypatch):
    token = issue_id_token(microsoft)
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)
    with pytest.raises(idtoken.InvalidIdToken, match="expired"):
        idtoken.validate(app, token, "the-nonce")


def test_rotated_signing_key_is_fetched_on_an_unknown_kid(microsoft, app, monkeypatch):
    monkeypatch.setattr(idtoken, "JWKS_REFETCH_COOLDOWN_SECONDS", 0.5)
    monkeypatch.setattr(idtoken, "_jwks_clients", {})
    idtoken.validate(app, issue_id_token(microsoft), "the-nonce")  # caches the JWKS
    new_kid = microsoft.control.rotate_keys(keep_old=False)
    time.sleep(0.6)
    token = issue_id_token(microsoft)
    assert idtoken.jwt.get_unverified_header(token)["kid"] == new_kid
    assert idtoken.validate(app, token, "the-nonce").object_id == ADELE
