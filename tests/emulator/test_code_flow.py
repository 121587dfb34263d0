"""Authorization code flow with PKCE, the sign-in page, and every error on the way."""

from __future__ import annotations

import base64
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests

from tests.emulator.conftest import (
    ADELE,
    CLIENT_ID,
    CONTOSO,
    DIEGO,
    REDIRECT,
    SECRET,
    SINGLE_CLIENT_ID,
    connect,
    graph_get,
    oauth_session,
    press,
    redirect_params,
)


def authorize_url(emu, tenant="common", **params):
    base = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": "openid offline_access User.Read",
        "state": "st-1",
    }
    base.update(params)
    return f"{emu.login_url}/{tenant}/oauth2/v2.0/authorize?{urlencode(base)}"


def token_post(emu, tenant="common", auth=None, **data):
    return requests.post(
        f"{emu.login_url}/{tenant}/oauth2/v2.0/token", data=data, auth=auth, timeout=10
    )


def test_code_flow_with_pkce_gives_tokens_and_a_valid_id_token(emulator, relaxed_scope):
    session, token = connect(emulator)
    assert token["token_type"] == "Bearer"
    # oauthlib hands the scope back as a list; Microsoft sends a string without offline_access.
    granted = set(token["scope"])
    assert "offline_access" not in granted
    assert {"User.Read", "Mail.Read", "openid"} <= granted
    assert 3600 <= token["expires_in"] <= 5400 and token["ext_expires_in"] == token["expires_in"]
    assert token["refresh_token"]
    key = jwt.PyJWKClient(f"{emulator.login_url}/common/discovery/v2.0/keys")
    claims = jwt.decode(
        token["id_token"],
        key.get_signing_key_from_jwt(token["id_token"]).key,
        algorithms=["RS256"],
        audience=CLIENT_ID,
        issuer=f"{emulator.login_url}/{CONTOSO}/v2.0",
        options={"require": ["exp", "iat", "nbf", "tid", "oid", "sub"]},
    )
    assert claims["tid"] == CONTOSO and claims["oid"] == ADELE
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["preferred_username"] == "adele.vance@contoso.example"
    assert claims["name"] == "Adele Vance" and claims["email"] == "adele.vance@contoso.example"
    assert claims["ver"] == "2.0"
    me = graph_get(emulator, token["access_token"], "me").json()
    assert me["id"] == ADELE and me["userPrincipalName"] == "adele.vance@contoso.example"


def test_sign_in_page_lists_users_and_state_comes_back(emulator):
    page = requests.get(authorize_url(emulator), timeout=10)
    assert page.status_code == 200
    assert "Adele Vance" in page.text and "Accept" in page.text and "Cancel" in page.text
    params = redirect_params(press(emulator.login_url, authorize_url(emulator)))
    assert params["state"] == "st-1" and params["code"]


def test_no_refresh_token_without_offline_access_and_no_id_token_without_openid(emulator):
    outcome = emulator.control.sign_in(authorize_url(emulator, scope="User.Read"), ADELE)
    code = outcome["params"]["code"]
    body = token_post(
        emulator,
        grant_type="authorization_code",
        client_id=CLIENT_ID,
        client_secret=SECRET,
        code=code,
        redirect_uri=REDIRECT,
    ).json()
    assert "refresh_token" not in body and "id_token" not in body
    assert body["scope"] == "User.Read"


def test_form_post_response_mode(emulator):
    outcome = emulator.control.sign_in(authorize_url(emulator, response_mode="form_post"), ADELE)
    assert outcome["type"] == "form_post" and outcome["action"] == REDIRECT
    assert outcome["fields"]["state"] == "st-1" and outcome["fields"]["code"]
    page = press(emulator.login_url, authorize_url(emulator, response_mode="form_post"))
    assert page.status_code == 200 and 'method="POST"' in page.text and REDIRECT in page.text


def test_cancel_returns_access_denied_65004(emulator):
    params = redirect_params(press(emulator.login_url, authorize_url(emulator), action="cancel"))
    assert params["error"] == "access_denied"
    assert params["error_description"].startswith("AADSTS65004")
    assert params["state"] == "st-1"


def test_a_disabled_account_is_stopped_on_the_sign_in_page_with_50057(emulator):
    emulator.control.update_user(DIEGO, account_enabled=False)
    page = press(emulator.login_url, authorize_url(emulator), user=DIEGO)
    assert page.status_code == 400 and "AADSTS50057" in page.text
    assert "Location" not in page.headers


def test_redirect_uri_mismatch_and_unknown_client_show_a_page_and_never_redirect(emulator):
    wrong = requests.get(
        authorize_url(emulator, redirect_uri="http://evil.example/cb"),
        allow_redirects=False,
        timeout=10,
    )
    assert wrong.status_code == 400 and "AADSTS50011" in wrong.text
    assert "Location" not in wrong.headers
    unknown = requests.get(
        authorize_url(emulator, client_id="00000000-0000-0000-0000-000000000001"),
        allow_redirects=False,
        timeout=10,
    )
    assert unknown.status_code == 400 and "AADSTS700016" in unknown.text


@pytest.mark.parametrize(
    ("params", "tenant", "error", "code"),
    [
        (
            {"scope": "https://graph.microsoft.com/.default User.Read"},
            "common",
            "invalid_scope",
            70011,
        ),
        ({"client_id": SINGLE_CLIENT_ID}, "common", "invalid_request", 50194),
        ({"response_type": "token"}, "common", "unsupported_response_type", 700054),
        ({"prompt": "none"}, "common", "login_required", 50058),
    ],
)
def test_authorize_errors_go_back_to_the_redirect_uri(emulator, params, tenant, error, code):
    response = requests.get(
        authorize_url(emulator, tenant, **params), allow_redirects=False, timeout=10
    )
    found = redirect_params(response)
    assert found["error"] == error
    assert found["error_description"].startswith(f"AADSTS{code}:")
    assert found["state"] == "st-1"


def test_unknown_tenant_is_aadsts90002(emulator):
    page = requests.get(authorize_url(emulator, "nowhere.example"), timeout=10)
    assert page.status_code == 400 and "AADSTS90002" in page.text
    body = token_post(
        emulator,
        "nowhere.example",
        grant_type="client_credentials",
        client_id=CLIENT_ID,
        client_secret=SECRET,
        scope="https://graph.microsoft.com/.default",
    ).json()
    assert body["error_codes"] == [90002]


def test_prompt_none_with_a_session_and_consent_signs_in_silently(emulator):
    http = requests.Session()
    press(emulator.login_url, authorize_url(emulator), http=http)
    silent = http.get(authorize_url(emulator, prompt="none"), allow_redirects=False, timeout=10)
    assert "code" in redirect_params(silent)
    more = http.get(
        authorize_url(emulator, prompt="none", scope="openid Mail.ReadWrite"),
        allow_redirects=False,
        timeout=10,
    )
    params = redirect_params(more)
    assert params["error"] == "consent_required" and "AADSTS65001" in params["error_description"]


def redeem(emulator, code, verifier=None, **extra):
    data = {
        "grant_type": "authorization_code",
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "code": code,
        "redirect_uri": REDIRECT,
    }
    if verifier:
        data["code_verifier"] = verifier
    data.update(extra)
    return token_post(emulator, **data)


def pkce_pair():
    import hashlib
    import secrets

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def test_code_is_single_use_and_checks_verifier_and_redirect(emulator):
    verifier, challenge = pkce_pair()
    url = authorize_url(emulator, code_challenge=challenge, code_challenge_method="S256")
    code = emulator.control.sign_in(url, ADELE)["params"]["code"]
    wrong = redeem(emulator, code, "x" * 50)
    assert wrong.status_code == 400 and wrong.json()["error_codes"] == [50148]
    code = emulator.control.sign_in(url, ADELE)["params"]["code"]
    mismatch = redeem(emulator, code, verifier, redirect_uri="http://127.0.0.1:8000/other/")
    assert mismatch.json()["error"] == "invalid_grant"
    code = emulator.control.sign_in(url, ADELE)["params"]["code"]
    assert redeem(emulator, code, verifier).status_code == 200
    again = redeem(emulator, code, verifier).json()
    assert again["error"] == "invalid_grant" and again["error_codes"] == [54005]
    for field in ("timestamp", "trace_id", "correlation_id", "error_uri"):
        assert again[field]
    assert "Trace ID:" in again["error_description"]
    assert "Correlation ID:" in again["error_description"]
    assert "Timestamp:" in again["error_description"]


def test_code_expires(emulator):
    emulator.control.settings(code_lifetime=0.2)
    code = emulator.control.sign_in(authorize_url(emulator), ADELE)["params"]["code"]
    time.sleep(0.3)
    body = redeem(emulator, code).json()
    assert body["error_codes"] == [70008]


def test_client_authentication_errors(emulator):
    code = emulator.control.sign_in(authorize_url(emulator), ADELE)["params"]["code"]
    bad = redeem(emulator, code, client_secret="wrong")
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    assert bad.json()["error_codes"] == [7000215]
    emulator.control.set_secret_expiry(CLIENT_ID, SECRET, expired=True)
    expired = redeem(emulator, code)
    assert expired.status_code == 401 and expired.json()["error_codes"] == [7000222]
    unknown = token_post(
        emulator,
        grant_type="authorization_code",
        client_id="nope",
        client_secret="x",
        code=code,
        redirect_uri=REDIRECT,
    ).json()
    assert unknown["error_codes"] == [700016]


def test_http_basic_client_authentication(emulator):
    code = emulator.control.sign_in(authorize_url(emulator), ADELE)["params"]["code"]
    response = token_post(
        emulator,
        auth=(CLIENT_ID, SECRET),
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT,
    )
    assert response.status_code == 200, response.text


def test_certificate_client_assertion(emulator):
    import datetime
    import hashlib
    import uuid

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "graphport")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    thumb = emulator.control.add_certificate(CLIENT_ID, pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert thumb == base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
    endpoint = f"{emulator.login_url}/{CONTOSO}/oauth2/v2.0/token"
    assertion = jwt.encode(
        {
            "aud": endpoint,
            "iss": CLIENT_ID,
            "sub": CLIENT_ID,
            "jti": str(uuid.uuid4()),
            "exp": int(time.time()) + 300,
            "nbf": int(time.time()),
        },
        key,
        algorithm="RS256",
        headers={"x5t": thumb},
    )
    response = requests.post(
        endpoint,
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "scope": "https://graph.microsoft.com/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        {"aud": endpoint, "iss": CLIENT_ID, "sub": CLIENT_ID, "exp": int(time.time()) + 300},
        other,
        algorithm="RS256",
        headers={"x5t": thumb},
    )
    refused = requests.post(
        endpoint,
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "scope": "https://graph.microsoft.com/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": forged,
        },
        timeout=10,
    )
    assert refused.status_code == 401 and refused.json()["error_codes"] == [700027]


def test_single_tenant_app_works_on_its_own_tenant(emulator):
    url = authorize_url(emulator, CONTOSO, client_id=SINGLE_CLIENT_ID)
    outcome = emulator.control.sign_in(url, ADELE)
    assert outcome["type"] == "redirect" and "code" in outcome["params"]


def test_user_without_mailbox_gets_mailbox_not_enabled(emulator, relaxed_scope):
    _, token = connect(emulator, DIEGO)
    response = graph_get(emulator, token["access_token"], "me/messages")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "MailboxNotEnabledForRESTAPI"
    assert graph_get(emulator, token["access_token"], "me").status_code == 200


def test_expired_access_token_is_401_invalid_authentication_token(emulator, relaxed_scope):
    emulator.control.settings(access_token_lifetime=1)
    _, token = connect(emulator)
    assert token["expires_in"] == 1
    time.sleep(1.1)
    response = graph_get(emulator, token["access_token"], "me")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "InvalidAuthenticationToken"
    assert set(error["innerError"]) >= {"date", "request-id", "client-request-id"}


def test_admin_consent_page_redirects_with_tenant(emulator):
    url = f"{emulator.login_url}/organizations/v2.0/adminconsent?" + urlencode(
        {
            "client_id": CLIENT_ID,
            "redirect_uri": "http://127.0.0.1:8000/connections/admin-consent/callback/",
            "state": "adm-1",
            "scope": "https://graph.microsoft.com/.default",
        }
    )
    response = press(emulator.login_url, url, ADELE)
    params = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}
    assert params == {
        "admin_consent": "True",
        "tenant": CONTOSO,
        "scope": "https://graph.microsoft.com/.default",
        "state": "adm-1",
    }
    denied = press(emulator.login_url, url, ADELE, action="cancel")
    assert "error=access_denied" in denied.headers["Location"]


def test_oauth_session_pkce_is_really_checked(emulator, relaxed_scope):
    session = oauth_session()
    url, _ = session.authorization_url(f"{emulator.login_url}/common/oauth2/v2.0/authorize")
    assert "code_challenge_method=S256" in url
    location = press(emulator.login_url, url).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    body = redeem(emulator, code).json()  # the verifier is missing
    assert body["error_codes"] == [50148]
