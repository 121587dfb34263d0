"""OpenID discovery, JWKS and the separation of the two hosts."""

from __future__ import annotations

import jwt
import requests

from tests.emulator.conftest import CLIENT_ID, CONTOSO, connect


def test_tenant_metadata_names_its_own_issuer_and_endpoints(emulator):
    meta = requests.get(
        f"{emulator.login_url}/{CONTOSO}/v2.0/.well-known/openid-configuration", timeout=10
    ).json()
    assert meta["issuer"] == f"{emulator.login_url}/{CONTOSO}/v2.0"
    assert meta["token_endpoint"] == f"{emulator.login_url}/{CONTOSO}/oauth2/v2.0/token"
    assert meta["jwks_uri"] == f"{emulator.login_url}/{CONTOSO}/discovery/v2.0/keys"


def test_common_and_domain_metadata(emulator):
    common = requests.get(
        f"{emulator.login_url}/common/v2.0/.well-known/openid-configuration", timeout=10
    ).json()
    assert common["issuer"] == f"{emulator.login_url}/{{tenantid}}/v2.0"
    assert common["authorization_endpoint"].endswith("/common/oauth2/v2.0/authorize")
    orgs = requests.get(
        f"{emulator.login_url}/organizations/v2.0/.well-known/openid-configuration", timeout=10
    ).json()
    assert orgs["issuer"] == f"{emulator.login_url}/{{tenantid}}/v2.0"
    by_domain = requests.get(
        f"{emulator.login_url}/contoso.example/v2.0/.well-known/openid-configuration", timeout=10
    )
    assert by_domain.json()["issuer"] == f"{emulator.login_url}/{CONTOSO}/v2.0"


def test_unknown_tenant_metadata_is_aadsts90002(emulator):
    response = requests.get(
        f"{emulator.login_url}/nowhere.example/v2.0/.well-known/openid-configuration", timeout=10
    )
    assert response.status_code == 400
    assert response.json()["error_codes"] == [90002]


def test_id_token_signature_checks_with_jwks_and_survives_key_rotation(emulator, relaxed_scope):
    jwks_url = f"{emulator.login_url}/common/discovery/v2.0/keys"
    _, token = connect(emulator)
    client = jwt.PyJWKClient(jwks_url)
    key = client.get_signing_key_from_jwt(token["id_token"])
    claims = jwt.decode(token["id_token"], key.key, algorithms=["RS256"], audience=CLIENT_ID)
    issuer = f"{emulator.login_url}/{{tenantid}}/v2.0".replace("{tenantid}", claims["tid"])
    assert claims["iss"] == issuer

    new_kid = emulator.control.rotate_keys()
    _, token2 = connect(emulator)
    assert jwt.get_unverified_header(token2["id_token"])["kid"] == new_kid
    kids = {k["kid"] for k in requests.get(jwks_url, timeout=10).json()["keys"]}
    assert new_kid in kids and key.key_id in kids
    fresh = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(token2["id_token"])
    jwt.decode(token2["id_token"], fresh.key, algorithms=["RS256"], audience=CLIENT_ID)


def test_graph_and_login_hosts_do_not_answer_for_each_other(emulator):
    assert requests.get(f"{emulator.login_url}/v1.0/me", timeout=10).status_code == 404
    assert (
        requests.post(f"{emulator.graph_url}/common/oauth2/v2.0/token", timeout=10).status_code
        == 404
    )
    assert (
        requests.get(
            f"{emulator.graph_url}/common/v2.0/.well-known/openid-configuration", timeout=10
        ).status_code
        == 404
    )
