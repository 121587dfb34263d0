"""Refresh tokens under each rotation policy, revocation, MFA, outages and counters."""

from __future__ import annotations

import time

import pytest
import requests

from tests.emulator.conftest import ADELE, CLIENT_ID, SECRET, connect, graph_get


def refresh(emu, refresh_token, **extra):
    data = {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "refresh_token": refresh_token,
        **extra,
    }
    return requests.post(f"{emu.login_url}/common/oauth2/v2.0/token", data=data, timeout=10)


def test_refresh_with_oauth_session_rotates_the_refresh_token(emulator, relaxed_scope):
    session, token = connect(emulator)
    new = session.refresh_token(
        f"{emulator.login_url}/common/oauth2/v2.0/token", client_id=CLIENT_ID, client_secret=SECRET
    )
    assert new["refresh_token"] != token["refresh_token"]
    assert new["access_token"] != token["access_token"]
    assert "id_token" in new
    assert graph_get(emulator, new["access_token"], "me").status_code == 200


def test_microsoft_policy_keeps_the_old_refresh_token_valid(emulator, relaxed_scope):
    _, token = connect(emulator)
    first = refresh(emulator, token["refresh_token"])
    assert first.status_code == 200
    assert refresh(emulator, token["refresh_token"]).status_code == 200
    assert refresh(emulator, first.json()["refresh_token"]).status_code == 200


def test_grace_policy_invalidates_the_old_token_after_the_grace_period(emulator, relaxed_scope):
    emulator.control.settings(refresh_rotation="grace:0.3")
    _, token = connect(emulator)
    newer = refresh(emulator, token["refresh_token"]).json()["refresh_token"]
    assert refresh(emulator, token["refresh_token"]).status_code == 200  # within grace
    time.sleep(0.4)
    late = refresh(emulator, token["refresh_token"])
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant"
    assert refresh(emulator, newer).status_code == 200


def test_reuse_detection_revokes_the_whole_grant_on_replay(emulator, relaxed_scope):
    emulator.control.settings(refresh_rotation="reuse_detection")
    _, token = connect(emulator)
    newer = refresh(emulator, token["refresh_token"]).json()["refresh_token"]
    replay = refresh(emulator, token["refresh_token"])
    assert replay.json()["error"] == "invalid_grant"
    after = refresh(emulator, newer).json()
    assert after["error"] == "invalid_grant" and after["error_codes"] == [50173]


def test_revoked_grant_is_aadsts50173(emulator, relaxed_scope):
    _, token = connect(emulator)
    assert emulator.control.revoke_grant(ADELE, CLIENT_ID) == 1
    body = refresh(emulator, token["refresh_token"]).json()
    assert body["error"] == "invalid_grant" and body["error_codes"] == [50173]


@pytest.mark.parametrize("error", ["interaction_required", "invalid_grant"])
def test_mfa_required_after_sign_in_is_aadsts50076(emulator, relaxed_scope, error):
    _, token = connect(emulator)
    emulator.control.require_mfa(ADELE, error=error)
    body = refresh(emulator, token["refresh_token"]).json()
    assert body["error"] == error and body["error_codes"] == [50076]
    assert body["suberror"] == "basic_action"
    _, again = connect(emulator)  # an interactive sign-in satisfies MFA
    assert refresh(emulator, again["refresh_token"]).status_code == 200


def test_refresh_for_unconsented_scope_is_consent_required(emulator, relaxed_scope):
    _, token = connect(emulator)
    body = refresh(emulator, token["refresh_token"], scope="Mail.ReadWrite").json()
    assert body["error_codes"] == [65001] and body["suberror"] == "consent_required"
    subset = refresh(emulator, token["refresh_token"], scope="User.Read offline_access")
    assert subset.json()["scope"] == "User.Read"


def test_token_endpoint_outage_then_recovery_and_latency(emulator, relaxed_scope):
    _, token = connect(emulator)
    emulator.control.token_outage(status=503, count=2, retry_after=3)
    for _ in range(2):
        down = refresh(emulator, token["refresh_token"])
        assert down.status_code == 503 and down.json()["error"] == "temporarily_unavailable"
        assert down.headers["Retry-After"] == "3"
    assert refresh(emulator, token["refresh_token"]).status_code == 200
    emulator.control.settings(token_latency_ms=200)
    started = time.monotonic()
    assert refresh(emulator, token["refresh_token"]).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_token_requests_are_counted_per_client_grant_and_user(emulator, relaxed_scope):
    _, token = connect(emulator)
    refresh(emulator, token["refresh_token"])
    refresh(emulator, token["refresh_token"])
    control = emulator.control
    assert control.token_request_count(CLIENT_ID, "authorization_code", ADELE) == 1
    assert control.token_request_count(CLIENT_ID, "refresh_token", ADELE) == 2
