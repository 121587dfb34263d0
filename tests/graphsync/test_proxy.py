"""The Graph proxy's domain layer (graphsync.proxy.forward) against the emulator over HTTP, the
workers' shared Redis throttle, and a small local Graph for what the emulator never answers."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
import requests
from django.utils import timezone

from connections.models import AuditEvent, Connection, EntraApp
from graphsync import proxy
from graphsync.client import GraphClient, shared_throttle
from graphsync.proxy import ProxyProblem, forward
from tests.conftest import ADELE, MS_CLIENT_ID, MS_TENANT
from tests.flows import connected

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "gpk_Ab3dE"


@pytest.fixture
def adele(client, microsoft, contoso):
    connection = connected(client, microsoft, contoso.member, contoso.app)
    microsoft.control.reset_counters()
    return Connection.objects.select_related("app").get(pk=connection.pk)


@pytest.fixture
def adele_writer(client, microsoft, contoso):
    """Adele connected with Mail.ReadWrite, which the emulator wants for PATCH on a message."""
    contoso.app.delegated_scopes = "User.Read Mail.ReadWrite"
    contoso.app.save(update_fields=["delegated_scopes"])
    connection = connected(client, microsoft, contoso.member, contoso.app)
    microsoft.control.reset_counters()
    return Connection.objects.select_related("app").get(pk=connection.pk)


def call(connection, method="GET", path="me", query="", body=None, content_type=None, **options):
    return forward(
        connection, method, path, query, body, content_type, api_key_prefix=KEY, **options
    )


def read(answer) -> bytes:
    with answer:
        return b"".join(answer.chunks)


def graph_requests(microsoft) -> list[dict]:
    return microsoft.control.requests(host="graph")


def refused(status: int, slug: str, *args, **kwargs) -> ProxyProblem:
    with pytest.raises(ProxyProblem) as caught:
        call(*args, **kwargs)
    assert (caught.value.status, caught.value.type) == (status, slug), caught.value.detail
    assert caught.value.title and caught.value.detail
    return caught.value


def mailbox_scope(connection):
    return GraphClient(connection).plan("mailbox").scopes[0]


def in_flight(connection) -> int:
    throttle = shared_throttle()
    return throttle.redis.zcard(throttle.key(mailbox_scope(connection), "inflight"))


# --- reads -----------------------------------------------------------------------------------


def test_a_get_returns_graphs_json_status_and_safe_headers(microsoft, adele):
    answer = call(adele, path="me")

    assert answer.status == 200
    assert orjson.loads(read(answer))["id"] == ADELE
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.headers["request-id"]
    assert set(answer.headers) <= {*proxy.RESPONSE_HEADERS, "Location"}
    assert [(r["method"], r["path"]) for r in graph_requests(microsoft)] == [("GET", "/v1.0/me")]


def test_the_query_string_is_passed_on(microsoft, adele):
    answer = call(adele, path="me/messages", query="%24top=2&$select=subject")

    messages = orjson.loads(read(answer))["value"]
    assert len(messages) == 2
    assert all(set(message) <= {"id", "subject", "@odata.etag"} for message in messages)


def test_a_graph_error_is_passed_back_as_graph_sent_it(adele):
    answer = call(adele, path="me/messages/no-such-message")

    assert answer.status == 404
    assert orjson.loads(read(answer))["error"]["code"]


def test_keyed_and_addressed_paths_reach_graph_as_written(microsoft, adele):
    inbox = call(adele, path="me/mailFolders('inbox')/messages", query="$top=1")
    by_upn = call(adele, path="users/adele.vance@contoso.example")

    assert inbox.status == 200 and len(orjson.loads(read(inbox))["value"]) == 1
    assert by_upn.status == 200 and orjson.loads(read(by_upn))["id"] == ADELE
    assert in_flight(adele) == 0  # read to the end: the mailbox's slot is free again


BAD_PATHS = [
    "",
    "/me",
    "//evil.example/v1.0/me",
    "http://evil.example/me",
    "https://evil.example/me",
    "HTTPS:evil.example",
    "me/../../admin",
    "me/./messages",
    "me/%2e%2e/%2E%2E/admin",
    "me/%252e%252e/admin",
    "me%2f..%2fadmin",
    "me/%5c..",
    "me\\messages",
    "me/messages\r\nHost: evil.example",
    "me/\x00",
    "me/" + "a" * 2046,
]


def test_paths_outside_the_graph_root_are_refused_naming_path_and_nothing_is_sent(microsoft, adele):
    for path in BAD_PATHS:
        problem = refused(400, "invalid-path", adele, path=path)
        assert problem.field == "path"
        assert problem.detail.startswith("path: ")

    assert graph_requests(microsoft) == []


def test_a_query_with_control_characters_is_refused(microsoft, adele):
    problem = refused(400, "invalid-query", adele, path="me", query="a=1\r\nX-Evil: 1")

    assert problem.field == "query"
    assert graph_requests(microsoft) == []


def test_other_methods_are_refused_with_405(microsoft, adele):
    for method in ("OPTIONS", "TRACE", "CONNECT", "PROPFIND"):
        refused(405, "method-not-allowed", adele, method=method, write_allowed=True)

    assert graph_requests(microsoft) == []


# --- writes ----------------------------------------------------------------------------------


def first_message_id(connection) -> str:
    answer = call(connection, path="me/messages", query="$top=1")
    return orjson.loads(read(answer))["value"][0]["id"]


def test_writes_are_refused_without_write_permission(microsoft, adele):
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        problem = refused(403, "write-not-allowed", adele, method=method, path="me/messages/x")
        assert method in problem.detail

    assert graph_requests(microsoft) == []
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.PROXY_WRITE).exists()


def test_a_write_is_sent_once_and_audited_without_its_body(microsoft, adele_writer):
    message = first_message_id(adele_writer)
    body = orjson.dumps({"subject": "Salary review: confidential", "isRead": True})

    answer = call(
        adele_writer,
        "PATCH",
        f"me/messages/{message}",
        body=body,
        content_type="application/json",
        write_allowed=True,
    )

    assert answer.status == 200
    assert orjson.loads(read(answer))["subject"] == "Salary review: confidential"
    patches = [r for r in graph_requests(microsoft) if r["method"] == "PATCH"]
    assert [r["path"] for r in patches] == [f"/v1.0/me/messages/{message}"]
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.PROXY_WRITE)
    assert event.connection_id == adele_writer.pk
    assert event.tenant_id == adele_writer.app.tenant_id
    assert event.message == f"PATCH me/messages/{message} → 200"
    assert event.data == {
        "api_key": KEY,
        "method": "PATCH",
        "path": f"me/messages/{message}",
        "status": 200,
    }
    assert "Salary" not in event.message + json.dumps(event.data)


def test_a_graph_429_on_a_write_is_passed_back_once_and_cools_the_mailbox(microsoft, adele_writer):
    message = first_message_id(adele_writer)
    microsoft.control.reset_counters()
    microsoft.control.throttle_mailbox(
        MS_CLIENT_ID, ADELE, rate_429=1.0, retry_after="seconds", retry_after_seconds=2
    )

    answer = call(
        adele_writer,
        "PATCH",
        f"me/messages/{message}",
        body=b'{"isRead": true}',
        content_type="application/json",
        write_allowed=True,
    )

    assert answer.status == 429 and answer.headers["Retry-After"] == "2"
    assert orjson.loads(read(answer))["error"]["code"] == "TooManyRequests"
    assert microsoft.control.mailbox_counters(MS_CLIENT_ID, ADELE)["requests"] == 1
    assert shared_throttle().stats(mailbox_scope(adele_writer))["throttled"] == 1
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.PROXY_WRITE)
    assert event.data["status"] == 429


def test_a_body_over_the_limit_is_refused_with_413(microsoft, adele):
    problem = refused(
        413,
        "body-too-large",
        adele,
        "POST",
        "me/messages",
        body=b"x" * (proxy.MAX_REQUEST_BYTES + 1),
        content_type="application/json",
        write_allowed=True,
    )

    assert problem.field == "body"
    assert graph_requests(microsoft) == []
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.PROXY_WRITE).exists()


def test_a_get_with_a_body_is_refused(microsoft, adele):
    problem = refused(400, "body-not-allowed", adele, "GET", "me", body=b"{}")

    assert problem.field == "body"
    assert graph_requests(microsoft) == []


# --- throttling ------------------------------------------------------------------------------


def test_a_graph_429_on_a_get_is_retried_within_the_wait(microsoft, adele, settings):
    settings.API_PROXY_MAX_WAIT_SECONDS = 3
    microsoft.control.throttle_mailbox(MS_CLIENT_ID, ADELE, budget=1, window_seconds=2)
    # Someone else (not Graphport's budgets) spends the emulator's window: the proxy's GET gets
    # a 429 whose Retry-After is the rest of that window.
    direct = requests.get(
        f"{microsoft.graph_url}/v1.0/me/messages",
        headers={"Authorization": f"Bearer {adele.access_token}"},
        timeout=10,
    )
    assert direct.status_code == 200

    started = time.monotonic()
    answer = call(adele, path="me/messages", query="$top=1")
    elapsed = time.monotonic() - started

    assert answer.status == 200 and len(orjson.loads(read(answer))["value"]) == 1
    counters = microsoft.control.mailbox_counters(MS_CLIENT_ID, ADELE)
    assert counters["requests"] == 3 and counters["budget_429"] == 1
    assert 0.5 < elapsed < 3.5
    assert shared_throttle().stats(mailbox_scope(adele))["throttled"] == 1


def test_a_long_retry_after_answers_429_at_once_and_cools_the_mailbox(microsoft, adele):
    microsoft.control.throttle_mailbox(
        MS_CLIENT_ID, ADELE, rate_429=1.0, retry_after="seconds", retry_after_seconds=30
    )

    started = time.monotonic()
    answer = call(adele, path="me/messages")
    elapsed = time.monotonic() - started

    assert answer.status == 429 and answer.headers["Retry-After"] == "30"
    assert orjson.loads(read(answer))["error"]["code"] == "TooManyRequests"
    assert elapsed < 4
    assert len(graph_requests(microsoft)) == 1

    # The mailbox now cools down for everyone: the next call is answered without sending.
    started = time.monotonic()
    problem = refused(429, "throttled", adele, path="me/messages")
    assert time.monotonic() - started < 1
    assert 25 <= problem.retry_after <= 30
    assert len(graph_requests(microsoft)) == 1


def test_a_budget_spent_by_the_workers_answers_429_without_sending(microsoft, adele, settings):
    settings.GRAPH_BUDGETS = {"mailbox": {"limit": 2, "window": 30}}
    throttle = shared_throttle()
    plan = GraphClient(adele).plan("mailbox")  # what a sync worker of Adele's mailbox spends
    for _ in range(2):
        throttle.release(throttle.acquire(plan.budgets, cost=plan.costs))

    started = time.monotonic()
    problem = refused(429, "throttled", adele, path="me/messages")

    assert time.monotonic() - started < 1  # not held: the wait is longer than the proxy's
    assert 28 <= problem.retry_after <= 31
    assert graph_requests(microsoft) == []
    # The profile is the directory's budget, not the mailbox's: it still goes through.
    assert call(adele, path="me").status == 200


def test_a_wait_within_the_budget_is_waited_out(microsoft, adele, settings):
    throttle = shared_throttle()
    throttle.cool_down(mailbox_scope(adele), 1.0)  # as a worker's 429 with Retry-After: 1 does

    started = time.monotonic()
    answer = call(adele, path="me/messages", query="$top=1")

    assert answer.status == 200
    assert 0.8 < time.monotonic() - started < 3
    read(answer)


# --- answers too large -----------------------------------------------------------------------


def test_an_answer_declared_larger_than_the_limit_is_refused_before_reading(adele, monkeypatch):
    monkeypatch.setattr(proxy, "MAX_RESPONSE_BYTES", 100)

    problem = refused(502, "response-too-large", adele, path="me/messages")

    assert "100" in problem.detail
    assert in_flight(adele) == 0


# --- a local Graph, for what the emulator never does ------------------------------------------


class LocalGraph(ThreadingHTTPServer):
    """Answers every request with `reply` (status, headers, body; no Content-Length unless in
    the headers, so the body ends when the connection closes) and records what it was sent."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _LocalGraphHandler)
        self.reply: tuple[int, dict[str, str], bytes] = (200, {}, b"{}")
        self.received: list[tuple[str, str, dict[str, str], bytes]] = []

    def handle_error(self, request, client_address):
        pass  # a client that stops reading (the cut stream) breaks the pipe: expected here

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _LocalGraphHandler(BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.received.append((self.command, self.path, dict(self.headers), body))
        status, headers, payload = self.server.reply
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def local_graph(adele):
    """Adele's connection, its app's Graph root moved to a local server; her token stays valid."""
    server = LocalGraph()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    EntraApp.objects.filter(pk=adele.app_id).update(graph_base_url=server.url)
    server.connection = Connection.objects.select_related("app").get(pk=adele.pk)
    yield server
    server.shutdown()
    server.server_close()


def test_only_the_allowed_request_headers_reach_graph(local_graph):
    read(
        call(
            local_graph.connection,
            path="me/messages",
            headers={
                "Authorization": "Bearer gpk_the_callers_own_key",
                "Cookie": "session=portal",
                "Prefer": "odata.maxpagesize=5",
                "If-None-Match": 'W/"1"',
                "ConsistencyLevel": "eventual",
                "client-request-id": "c0ffee",
                "X-Forwarded-For": "10.0.0.1",
            },
            accept="application/json",
        )
    )

    [(method, path, sent, _)] = local_graph.received
    assert (method, path) == ("GET", "/v1.0/me/messages")
    assert sent["Authorization"] == f"Bearer {local_graph.connection.access_token}"
    assert sent["Prefer"] == "odata.maxpagesize=5"
    assert sent["If-None-Match"] == 'W/"1"'
    assert sent["ConsistencyLevel"] == "eventual"
    assert sent["client-request-id"] == "c0ffee"
    assert sent["Accept"] == "application/json"
    assert "Cookie" not in sent and "X-Forwarded-For" not in sent


def test_only_safe_response_headers_come_back(local_graph):
    graph = local_graph.url
    local_graph.reply = (
        201,
        {
            "Content-Type": "application/json",
            "ETag": 'W/"2"',
            "request-id": "r-1",
            "Location": f"{graph}/v1.0/me/messages/new",
            "Set-Cookie": "graph=1",
            "x-ms-ags-diagnostic": "internal",
        },
        b'{"id": "new"}',
    )
    created = call(
        local_graph.connection,
        "POST",
        "me/messages",
        body=b"{}",
        content_type="application/json",
        write_allowed=True,
    )
    local_graph.reply = (202, {"Location": "https://elsewhere.example/monitor"}, b"")
    accepted = call(local_graph.connection, "POST", "me/messages/x/copy", write_allowed=True)

    assert created.headers == {
        "Content-Type": "application/json",
        "ETag": 'W/"2"',
        "request-id": "r-1",
        "Location": f"{graph}/v1.0/me/messages/new",
    }
    assert read(created) == b'{"id": "new"}'
    assert accepted.status == 202 and "Location" not in accepted.headers
    assert local_graph.received[0][3] == b"{}"


def test_a_stream_past_the_limit_is_cut(local_graph, monkeypatch):
    monkeypatch.setattr(proxy, "MAX_RESPONSE_BYTES", 100_000)
    local_graph.reply = (200, {"Content-Type": "application/octet-stream"}, b"x" * 300_000)
    answer = call(local_graph.connection, path="me/photo/$value")

    received = b""
    with pytest.raises(ProxyProblem) as caught:
        for chunk in answer.chunks:
            received += chunk

    assert caught.value.type == "response-too-large"
    assert 0 < len(received) <= 100_000
    assert list(answer.chunks) == []  # closed: nothing more comes


def test_a_graph_host_that_does_not_answer_is_a_502(local_graph, microsoft):
    local_graph.shutdown()
    local_graph.server_close()

    problem = refused(
        502, "graph-unreachable", local_graph.connection, "DELETE", "me/x", write_allowed=True
    )

    assert "could not be reached" in problem.detail
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.PROXY_WRITE)
    assert event.message == "DELETE me/x → no answer" and event.data["status"] is None


def test_a_redirect_is_not_followed(local_graph):
    local_graph.reply = (302, {"Location": "https://files.example/download?token=x"}, b"")

    refused(502, "graph-redirect", local_graph.connection, path="me/drive/items/1/content")

    assert len(local_graph.received) == 1


# --- tokens ----------------------------------------------------------------------------------


def test_a_connection_needing_a_reconnect_answers_409_without_sending(microsoft, adele):
    Connection.objects.filter(pk=adele.pk).update(
        status=Connection.Status.RECONNECT_NEEDED, status_reason="The grant was revoked."
    )

    problem = refused(409, "reconnect-needed", adele, path="me")

    assert "revoked" in problem.detail
    assert graph_requests(microsoft) == []


def test_a_token_endpoint_outage_answers_503_with_retry_after(microsoft, adele):
    Connection.objects.filter(pk=adele.pk).update(
        access_token_expires_at=timezone.now() - timedelta(minutes=1)
    )
    microsoft.control.token_outage(status=503, count=10)

    problem = refused(503, "token-unavailable", adele, path="me")

    assert problem.retry_after is not None and problem.retry_after >= 1
    assert graph_requests(microsoft) == []


def test_a_token_graph_rejects_is_refreshed_once_and_the_call_repeated(microsoft, adele):
    microsoft.control.expire_access_tokens(token=adele.access_token)

    answer = call(adele, path="me")

    assert answer.status == 200 and orjson.loads(read(answer))["id"] == ADELE
    assert Connection.objects.get(pk=adele.pk).access_token != adele.access_token
    assert microsoft.control.token_request_count(MS_CLIENT_ID, "refresh_token") == 1
    assert [r["status"] for r in graph_requests(microsoft)] == [401, 200]


def test_each_path_spends_the_budget_the_workers_spend_for_it(adele):
    client = GraphClient(adele)
    own_mailbox = client.plan("mailbox").scopes[0]

    def first_scope(path: str, query: str = ""):
        plan = proxy._plan(client, "GET", path, query)
        return plan.scopes[0], plan.costs[plan.scopes[0]]

    assert first_scope("me/messages") == (own_mailbox, 1)
    assert first_scope(f"users/{ADELE}/mailFolders('inbox')/messages") == (own_mailbox, 1)
    # Another mailbox is a scope of its own at Microsoft.
    other, _ = first_scope("users/alex.wilber@contoso.example/events")
    assert other.kind == "mailbox" and other != own_mailbox
    assert other.subject == f"{MS_TENANT}/alex.wilber@contoso.example"
    assert first_scope("me/drive/root/children")[0].kind == "tenant-drive"
    assert first_scope("me") == (client.plan("directory").scopes[0], 2)
    assert first_scope("groups/g/transitiveMembers", "$select=id")[1] == 4
    assert first_scope("me/joinedTeams")[0].kind == "tenant-directory"
    assert first_scope("$batch")[0].kind == "app"
