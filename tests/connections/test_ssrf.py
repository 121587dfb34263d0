"""Server-side request forgery through an app's custom cloud: internal hosts refused when the app
is saved and again before every request, no redirect followed, no secret over plain http://,
and no outside error text echoed unless Microsoft-shaped (README.md, "Security").

The "outside" hosts here are tiny HTTP servers on loopback: tests that need them reached turn
MICROSOFT_ALLOW_INTERNAL_HOSTS on, as the emulator's tests do; those about internal hosts turn it
off and check that the server saw nothing at all.
"""

from __future__ import annotations

import json
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from connections import credentials, identity, idtoken
from connections.models import ClientSecret, Connection, EntraApp
from core import outbound
from devtools.localservices import free_port
from graphsync.client import GraphClient, GraphError

pytestmark = pytest.mark.django_db

HOME_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
SECRET = "Very~Secret.Value-0123456789"
REAL_GETADDRINFO = socket.getaddrinfo


class LocalServer:
    """An HTTP server on loopback that gives one canned answer and remembers every connection
    and request it got."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None, body: bytes = b""):
        self.status, self.headers, self.body = status, headers or {}, body
        self.connections = 0
        self.requests: list[tuple[str, str, bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                server.requests.append((self.command, self.path, self.rfile.read(length)))
                self.send_response(server.status)
                for name, value in server.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        class Counting(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request, client_address) -> bool:
                server.connections += 1  # any connection, even one that never makes a request
                return True

        self.httpd = Counting(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def untouched(self) -> bool:
        return self.connections == 0 and not self.requests

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers: list[LocalServer] = []

    def start(*args, **kwargs) -> LocalServer:
        servers.append(LocalServer(*args, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def internal_allowed(settings):
    settings.MICROSOFT_ALLOW_HTTP = True
    settings.MICROSOFT_ALLOW_INTERNAL_HOSTS = True


@pytest.fixture
def internal_refused(settings):
    settings.MICROSOFT_ALLOW_HTTP = True
    settings.MICROSOFT_ALLOW_INTERNAL_HOSTS = False


def resolving(monkeypatch, names: dict[str, str]) -> None:
    """DNS as a test wants it: each name resolves to its address, every other name as usual."""

    def getaddrinfo(host, port, *args, **kwargs):
        address = names.get(host)
        if address is None:
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, port or 0, 0, 0) if family == socket.AF_INET6 else (address, port)
        return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


PRIVATE_GRAPH = "https://graph.contoso-private.example"


def custom_app(tenant, login: str, graph: str = PRIVATE_GRAPH) -> EntraApp:
    """An app on the custom cloud, stored as an operator left it (the model's checks are what
    some tests are about, so they are not run here)."""
    app = EntraApp.objects.create(
        tenant=tenant,
        name="Private cloud",
        client_id=CLIENT_ID,
        directory_tenant_id=HOME_TENANT,
        cloud="custom",
        login_base_url=login,
        graph_base_url=graph,
        authority="organizations",
    )
    ClientSecret.objects.create(
        app=app, value=SECRET, hint=SECRET[:3], expires_on=timezone.localdate() + timedelta(days=90)
    )
    return app


def clean_errors(login: str, graph: str = PRIVATE_GRAPH) -> list[str]:
    app = EntraApp(
        name="Private cloud",
        client_id=CLIENT_ID,
        authority="organizations",
        cloud="custom",
        login_base_url=login,
        graph_base_url=graph,
    )
    with pytest.raises(ValidationError) as caught:
        app.full_clean(exclude=["tenant"])
    return caught.value.message_dict.get("login_base_url", [])


# --- internal hosts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "login",
    [
        "https://127.0.0.1",
        "https://localhost:8443",
        "https://[::1]",
        "https://[::ffff:127.0.0.1]",
        "https://169.254.169.254",
        "https://10.1.2.3",
        "https://192.168.0.10",
        "https://0.0.0.0",
        "https://224.0.0.1",
        "https://login.intranet.example",  # resolves to 10.0.0.7, below
        "https://login.v6-intranet.example",  # resolves to fd00::7, below
    ],
)
def test_internal_custom_urls_are_refused_when_saved(internal_refused, monkeypatch, login):
    resolving(
        monkeypatch,
        {"login.intranet.example": "10.0.0.7", "login.v6-intranet.example": "fd00::7"},
    )
    messages = clean_errors(login)
    assert any("internal address" in m and "MICROSOFT_ALLOW_INTERNAL_HOSTS" in m for m in messages)


def test_internal_custom_urls_are_accepted_with_the_operator_setting(internal_allowed):
    EntraApp(
        name="Emulator",
        client_id=CLIENT_ID,
        authority="organizations",
        cloud="custom",
        login_base_url="http://127.0.0.1:5010",
        graph_base_url="http://localhost:5011",
    ).full_clean(exclude=["tenant"])


@pytest.mark.parametrize(
    "login",
    ["https://login.microsoftonline.com@127.0.0.1", "https://user:pass@login.example.com"],
)
def test_urls_with_user_info_are_refused(internal_allowed, login):
    messages = clean_errors(login)
    assert any("user name or password" in m for m in messages)
    with pytest.raises(outbound.Refused):
        outbound.check_request(f"{login}/common/oauth2/v2.0/token")


def test_a_host_resolving_to_loopback_is_refused_at_request_time(
    internal_refused, acme, serve, monkeypatch
):
    # Public when the app was saved, loopback by the time of the request (DNS rebinding).
    server = serve()
    resolving(monkeypatch, {"login.rebinding.example": "93.184.216.34"})
    app = custom_app(acme.tenant, f"https://login.rebinding.example:{server.port}")
    app.full_clean(exclude=["tenant"])
    resolving(monkeypatch, {"login.rebinding.example": "127.0.0.1"})

    result = credentials.verify(app)

    assert not result.ok
    assert "could not be reached" in result.message
    assert server.untouched


def test_a_stored_loopback_name_is_refused_at_request_time(internal_refused, acme, serve):
    server = serve()
    app = custom_app(acme.tenant, f"https://localhost:{server.port}")

    result = credentials.verify(app)

    assert not result.ok and "could not be reached" in result.message
    assert server.untouched


# --- redirects -------------------------------------------------------------------------------


@pytest.fixture
def redirecting(serve):
    """A host answering 307 towards a second one, which must never be reached."""
    target = serve(200, {"Content-Type": "application/json"}, b'{"access_token": "x"}')
    source = serve(307, {"Location": f"{target.url}/stolen"})
    return source, target


def test_a_token_request_does_not_follow_a_redirect(internal_allowed, acme, redirecting):
    source, target = redirecting
    app = custom_app(acme.tenant, source.url)

    result = credentials.verify(app)

    assert not result.ok
    assert "redirect (HTTP 307)" in result.message
    assert len(source.requests) == 1
    assert target.untouched


def test_metadata_and_keys_are_not_fetched_through_a_redirect(
    internal_allowed, acme, redirecting, monkeypatch
):
    source, target = redirecting
    monkeypatch.setattr(idtoken, "_jwks_clients", {})
    monkeypatch.setattr(idtoken, "_tenant_ids", {})
    app = custom_app(acme.tenant, source.url)
    app.authority = "contoso.example"  # a domain: its tenant is read from the metadata
    token = jwt.encode(
        {"tid": HOME_TENANT, "aud": CLIENT_ID}, "k" * 32, algorithm="HS256", headers={"kid": "k1"}
    )

    with pytest.raises(idtoken.InvalidIdToken, match=r"redirect \(HTTP 307\)"):
        idtoken.validate(app, token, "nonce")
    with pytest.raises(idtoken.InvalidIdToken, match=r"redirect \(HTTP 307\)"):
        idtoken.expected_tenant(app)

    assert [path for _, path, _ in source.requests] == [
        "/contoso.example/discovery/v2.0/keys",
        "/contoso.example/v2.0/.well-known/openid-configuration",
    ]
    assert target.untouched


def connected_through(app, member) -> Connection:
    """A connection of `app` with a valid access token: Graph requests go out at once."""
    return Connection.objects.create(
        app=app,
        user=member,
        ms_tenant_id=HOME_TENANT,
        ms_object_id="0c7d8e9f-1a2b-4c3d-8e4f-5a6b7c8d9e0f",
        access_token="graph-access-token",
        refresh_token="graph-refresh-token",
        access_token_expires_at=timezone.now() + timedelta(hours=1),
    )


def test_a_graph_request_does_not_follow_a_redirect(internal_allowed, acme, redirecting):
    source, target = redirecting
    app = custom_app(acme.tenant, "https://login.contoso-private.example", graph=source.url)
    connection = connected_through(app, acme.member)
    client = GraphClient(connection)
    try:
        with pytest.raises(GraphError) as raised:
            client.get_page("/me", client.plan("directory"))
    finally:
        client.close()

    assert raised.value.code == "refused" and "redirect (HTTP 307)" in raised.value.message
    assert target.untouched


def test_a_next_link_to_another_host_is_not_followed(internal_allowed, acme, serve):
    elsewhere = serve(200, {"Content-Type": "application/json"}, b'{"value": []}')
    page = {"value": [{"id": "1"}], "@odata.nextLink": f"{elsewhere.url}/v1.0/me/messages?p=2"}
    graph = serve(200, {"Content-Type": "application/json"}, json.dumps(page).encode())
    app = custom_app(acme.tenant, "https://login.contoso-private.example", graph=graph.url)
    connection = connected_through(app, acme.member)
    client = GraphClient(connection)
    try:
        first = client.get_page("/me/messages", client.plan("mailbox"))
        with pytest.raises(GraphError) as raised:
            client.get_page(first.next_link, client.plan("mailbox"))
    finally:
        client.close()

    assert raised.value.code == "refused"
    assert f"A link to 127.0.0.1:{elsewhere.port} is not on this app's Graph host" in str(
        raised.value.message
    )
    assert elsewhere.untouched


# --- plain http ------------------------------------------------------------------------------


def test_a_secret_is_never_sent_over_plain_http_without_the_setting(settings, serve):
    settings.MICROSOFT_ALLOW_HTTP = False
    settings.MICROSOFT_ALLOW_INTERNAL_HOSTS = True
    server = serve(200, {"Content-Type": "application/json"}, b'{"access_token": "x"}')

    with pytest.raises(identity.RequestRefused, match="MICROSOFT_ALLOW_HTTP") as raised:
        identity.app_token(
            f"{server.url}/{HOME_TENANT}/oauth2/v2.0/token",
            CLIENT_ID,
            {"client_secret": SECRET},
            "https://graph.microsoft.com/.default",
        )

    assert raised.value.failure_class == identity.FailureClass.CONFIGURATION
    assert server.untouched


# --- what comes back -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        (502, "text/html", b"<h1>intranet-admin: db password hunter2</h1>"),
        (400, "application/json", b'{"detail": "intranet-admin: db password hunter2"}'),
        (401, "application/json", b'{"error": "intranet-admin: db password hunter2"}'),
    ],
)
def test_a_non_microsoft_error_body_is_not_echoed_into_the_credentials_detail(
    internal_allowed, acme, serve, status, content_type, body
):
    server = serve(status, {"Content-Type": content_type}, body)
    app = custom_app(acme.tenant, server.url)

    result = credentials.verify(app)

    app.refresh_from_db()
    assert not result.ok
    assert f"Unexpected answer (HTTP {status}) from 127.0.0.1:{server.port}" in result.message
    assert app.credentials_detail == result.message
    for text in (app.credentials_detail, app.secrets.get().verification_detail):
        assert "intranet-admin" not in text and "hunter2" not in text


def test_a_microsoft_error_description_is_shown_cut_short(internal_allowed, acme, serve):
    description = "AADSTS900971: " + "x" * 2_000
    body = {"error": "invalid_request", "error_description": description, "error_codes": [900971]}
    server = serve(400, {"Content-Type": "application/json"}, json.dumps(body).encode())
    app = custom_app(acme.tenant, server.url)

    with pytest.raises(identity.IdentityError) as raised:
        identity.app_token(
            f"{server.url}/{HOME_TENANT}/oauth2/v2.0/token",
            CLIENT_ID,
            {"client_secret": SECRET},
            app.app_only_scope,
        )

    assert raised.value.description.startswith("AADSTS900971: xxx")
    assert len(raised.value.description) <= identity.MAX_FOREIGN_TEXT
    assert raised.value.codes == [900971]


def test_a_closed_port_and_an_open_non_microsoft_port_read_the_same(internal_refused, acme, serve):
    open_port = serve(404, {"Content-Type": "text/html"}, b"<h1>Jenkins</h1>").port
    closed_port = free_port()
    messages = []
    for port in (closed_port, open_port):
        app = custom_app(acme.tenant, f"http://127.0.0.1:{port}")
        result = credentials.verify(app)
        messages.append(result.message.replace(str(port), "PORT"))
        app.delete()

    assert messages[0] == messages[1]
    assert "could not be reached" in messages[0]
