"""A running emulator for the whole session, reset to the test scenario before every test."""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from requests_oauthlib import OAuth2Session

from emulator.testing import DEMO_SCENARIO, RunningEmulator, running_emulator

CONTOSO = "8a3f2b1c-4d5e-4f60-9a7b-1c2d3e4f5a6b"
FABRIKAM = "6d2c1b0a-9e8f-4a7b-8c6d-5e4f3a2b1c0d"
CLIENT_ID = "3c9e6d1a-52b4-4f7e-8a1d-6b0c2e9f4a17"
SECRET = "demo~secret.GraphportEmulator0123456789"
SINGLE_CLIENT_ID = "7e1d2c3b-4a59-4687-9a0b-c1d2e3f4a5b6"
SINGLE_SECRET = "single~tenant.secret0123456789abcdefgh"
REDIRECT = "http://127.0.0.1:8000/connections/callback/"
ADMIN_REDIRECT = "http://127.0.0.1:8000/connections/admin-consent/callback/"
ADELE = "5f1c9e2a-7b3d-4c8e-9f10-2a3b4c5d6e7f"
ALEX = "0c7d8e9f-1a2b-4c3d-8e4f-5a6b7c8d9e0f"
DIEGO = "e2f3a4b5-c6d7-4e8f-9a0b-1c2d3e4f5a6c"
SCOPES = [
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


def scenario() -> dict[str, Any]:
    spec = json.loads(DEMO_SCENARIO.read_text())
    spec["tenants"].append(
        {
            "id": FABRIKAM,
            "domain": "fabrikam.example",
            "name": "Fabrikam",
            "users": [
                {"upn": "megan.bowen@fabrikam.example", "admin": True, "data": {"messages": 5}}
            ],
        }
    )
    spec["apps"].append(
        {
            "client_id": SINGLE_CLIENT_ID,
            "name": "Single tenant tool",
            "home_tenant": CONTOSO,
            "multi_tenant": False,
            "redirect_uris": [REDIRECT],
            "secrets": [{"value": SINGLE_SECRET}],
            "application_permissions": ["User.Read.All"],
        }
    )
    return spec


@pytest.fixture(scope="session")
def emulator() -> Iterator[RunningEmulator]:
    with running_emulator(scenario()) as emu:
        yield emu


@pytest.fixture(autouse=True)
def fresh(emulator: RunningEmulator) -> RunningEmulator:
    emulator.control.load_scenario(copy.deepcopy(scenario()))
    emulator.control.reset_counters()
    return emulator


@pytest.fixture
def relaxed_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    # Microsoft leaves offline_access out of the granted scope; oauthlib calls that a change.
    monkeypatch.setenv("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


def oauth_session(
    scope: list[str] | None = None, client_id: str = CLIENT_ID, redirect_uri: str = REDIRECT
) -> OAuth2Session:
    return OAuth2Session(client_id, redirect_uri=redirect_uri, scope=scope or SCOPES, pkce="S256")


def press(
    login_url: str,
    authorize_url: str,
    user: str = ADELE,
    action: str = "accept",
    http: requests.Session | None = None,
) -> requests.Response:
    """Open the sign-in page like a browser and press Accept or Cancel for one user."""
    http = http or requests.Session()
    page = http.get(authorize_url, allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.text
    params = re.search(r'name="params" value="([^"]*)"', page.text)
    assert params, page.text
    import html

    return http.post(
        authorize_url.split("?")[0],
        data={"params": html.unescape(params.group(1)), "user": user, "action": action},
        allow_redirects=False,
        timeout=10,
    )


def redirect_params(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def connect(
    emu: RunningEmulator,
    user: str = ADELE,
    scope: list[str] | None = None,
    tenant: str = "common",
    client_id: str = CLIENT_ID,
    secret: str = SECRET,
) -> tuple[OAuth2Session, dict[str, Any]]:
    """A whole code flow with PKCE, as the portal does it; returns the session and token."""
    session = oauth_session(scope, client_id)
    url, state = session.authorization_url(
        f"{emu.login_url}/{tenant}/oauth2/v2.0/authorize", nonce="n-0S6_WzA2Mj"
    )
    response = press(emu.login_url, url, user)
    location = response.headers["Location"]
    token = session.fetch_token(
        f"{emu.login_url}/{tenant}/oauth2/v2.0/token",
        authorization_response=location,
        client_secret=secret,
        include_client_id=True,
    )
    return session, token


def graph_get(emu: RunningEmulator, token: str, path: str, **kwargs: Any) -> requests.Response:
    url = path if path.startswith("http") else f"{emu.graph_url}/v1.0/{path.lstrip('/')}"
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    return requests.get(url, headers=headers, timeout=30, **kwargs)


def app_token(emu: RunningEmulator, tenant: str = CONTOSO) -> str:
    response = requests.post(
        f"{emu.login_url}/{tenant}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "scope": "https://graph.microsoft.com/.default",
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


class Receiver:
    """A webhook endpoint on loopback: echoes validation tokens, records notifications (each
    request with the time it came). It answers 202, or the next of `answers` ((status,
    Retry-After or None)) while any are left, after `pause` seconds."""

    def __init__(self, echo: bool = True, pause: float = 0.0) -> None:
        self.echo = echo
        self.pause = pause
        self.answers: list[tuple[int, str | None]] = []
        self.received: list[dict[str, Any]] = []
        self.validations: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                query = parse_qs(urlsplit(self.path).query)
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length) if length else b""
                if "validationToken" in query:
                    token = query["validationToken"][0]
                    receiver.validations.append(token)
                    reply = token.encode() if receiver.echo else b"nope"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                    return
                arrived = time.monotonic()
                time.sleep(receiver.pause)
                with receiver.lock:
                    status, retry_after = (
                        receiver.answers.pop(0) if receiver.answers else (202, None)
                    )
                    receiver.received.append(
                        {"path": self.path, "body": json.loads(body), "at": arrived}
                    )
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def notes(self, path: str = "/notify") -> list[dict[str, Any]]:
        """Every notification received at `path`, in the order they came, whatever the batch."""
        return [
            note for r in list(self.received) if r["path"] == path for note in r["body"]["value"]
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()
