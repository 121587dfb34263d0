"""`$batch` and throttling: per-item statuses, budgets, concurrency, injected faults, counters."""

from __future__ import annotations

import email.utils
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.emulator.conftest import ADELE, CLIENT_ID, connect, graph_get


@pytest.fixture
def token(emulator, relaxed_scope):
    return connect(emulator)[1]["access_token"]


def batch(emu, token, requests_):
    return requests.post(
        f"{emu.graph_url}/v1.0/$batch",
        json={"requests": requests_},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_batch_returns_one_status_per_item(emulator, token):
    response = batch(
        emulator,
        token,
        [
            {"id": "1", "method": "GET", "url": "/me"},
            {"id": "2", "method": "GET", "url": "/me/messages?$top=2&$select=subject"},
            {"id": "3", "method": "GET", "url": "/groups"},
            {"id": "4", "method": "GET", "url": "me/messages/nope"},
        ],
    )
    assert response.status_code == 200
    by_id = {r["id"]: r for r in response.json()["responses"]}
    assert by_id["1"]["status"] == 200 and by_id["1"]["body"]["id"] == ADELE
    assert len(by_id["2"]["body"]["value"]) == 2
    assert by_id["3"]["status"] == 403
    assert by_id["3"]["body"]["error"]["code"] == "Authorization_RequestDenied"
    assert by_id["4"]["status"] == 404


def test_batch_limits_and_depends_on(emulator, token):
    too_many = batch(
        emulator, token, [{"id": str(i), "method": "GET", "url": "/me"} for i in range(21)]
    )
    assert too_many.status_code == 400
    dup = batch(emulator, token, [{"id": "1", "method": "GET", "url": "/me"}] * 2)
    assert dup.status_code == 400
    chain = batch(
        emulator,
        token,
        [
            {"id": "1", "method": "GET", "url": "/me/messages/missing"},
            {"id": "2", "dependsOn": ["1"], "method": "GET", "url": "/me"},
            {"id": "3", "method": "GET", "url": "/me"},
        ],
    ).json()["responses"]
    by_id = {r["id"]: r["status"] for r in chain}
    assert by_id == {"1": 404, "2": 424, "3": 200}


def test_batch_item_over_the_budget_is_429_with_its_own_retry_after(emulator, token):
    emulator.control.throttle_mailbox(CLIENT_ID, ADELE, budget=3, window_seconds=60)
    items = [{"id": str(i), "method": "GET", "url": "/me/messages?$top=1"} for i in range(1, 6)]
    responses = {r["id"]: r for r in batch(emulator, token, items).json()["responses"]}
    assert [responses[str(i)]["status"] for i in range(1, 6)] == [200, 200, 200, 429, 429]
    throttled = responses["4"]
    assert throttled["body"]["error"]["code"] == "TooManyRequests"
    assert 1 <= int(throttled["headers"]["Retry-After"]) <= 60
    counters = emulator.control.mailbox_counters(CLIENT_ID, ADELE)
    assert counters["requests"] == 5 and counters["budget_429"] == 2
    again = graph_get(emulator, token, "me/messages?$top=1")
    assert again.status_code == 429  # throttled requests still count against the budget


def test_fifth_concurrent_request_on_a_mailbox_is_throttled(emulator, token):
    emulator.control.throttle_mailbox(CLIENT_ID, ADELE, latency_ms=400)
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(
            pool.map(lambda _: graph_get(emulator, token, "me/messages?$top=1"), range(6))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 200, 429, 429]
    throttled = next(r for r in responses if r.status_code == 429)
    assert throttled.json()["error"]["code"] == "ApplicationThrottled"
    assert "Retry-After" in throttled.headers
    counters = emulator.control.mailbox_counters(CLIENT_ID, ADELE)
    assert counters["peak_concurrency"] == 4 and counters["concurrency_429"] == 2


def test_injected_faults_and_retry_after_as_http_date(emulator, token):
    emulator.control.throttle_mailbox(
        CLIENT_ID, ADELE, rate_503=1.0, retry_after="date", retry_after_seconds=5
    )
    response = graph_get(emulator, token, "me/messages")
    assert response.status_code == 503
    assert email.utils.parsedate_to_datetime(response.headers["Retry-After"])
    emulator.control.throttle_mailbox(
        CLIENT_ID, ADELE, rate_503=0, rate_429=1.0, retry_after="seconds", retry_after_seconds=2.128
    )
    response = graph_get(emulator, token, "me/messages")
    assert response.status_code == 429 and response.headers["Retry-After"] == "2.128"
    counters = emulator.control.mailbox_counters(CLIENT_ID, ADELE)
    assert counters["injected_503"] == 1 and counters["injected_429"] == 1
    assert counters["throttled_429"] == 1 and counters["budget_429"] == 0


def test_directory_resource_units_per_app_and_tenant(emulator):
    from tests.emulator.conftest import CONTOSO, app_token

    emulator.control.grant_consent(CONTOSO, CLIENT_ID)
    emulator.control.throttle_tenant(CLIENT_ID, CONTOSO, ru_budget=5)
    token = app_token(emulator)
    statuses = [graph_get(emulator, token, "users").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    last = graph_get(emulator, token, "users")
    assert last.headers["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
    assert "Retry-After" in last.headers


def test_request_log_records_graph_calls(emulator, token):
    graph_get(emulator, token, "me")
    log = emulator.control.requests(host="graph")
    assert log[-1]["path"] == "/v1.0/me" and log[-1]["status"] == 200
    assert log[-1]["client_id"] == CLIENT_ID
