"""Webhook receivers for the tests: HTTP/1.1 servers on loopback (keep-alive, as a real receiver
behind a proxy would be) that answer each request as told and remember what they got."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    stall: float = 0.0  # seconds the request is held before the answer (cut short by stop())


@dataclass
class Received:
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # time.monotonic() when it arrived

    def verify(self, secret: str) -> dict:
        """The payload, if the Standard Webhooks signature checks out with `secret`."""
        return Webhook(secret).verify(self.body, self.headers)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """Answers the n-th request with the n-th answer (the last one repeats)."""

    def __init__(self, *answers: Answer):
        self.answers = list(answers) or [Answer()]
        self.requests: list[Received] = []
        self.connections = 0
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # or every answer waits for a delayed ACK

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver.requests.append(Received(headers, body, time.monotonic()))
                answer = receiver.answers[min(len(receiver.requests), len(receiver.answers)) - 1]
                if answer.stall:
                    receiver.released.wait(answer.stall)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request, client_address) -> bool:
                receiver.connections += 1
                return True

            def handle_error(self, request, client_address) -> None:
                pass  # a client that went away (a killed worker) is what some tests are about

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def untouched(self) -> bool:
        return self.connections == 0 and not self.requests

    def stop(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def running_receivers(settings) -> Iterator[Callable[..., Receiver]]:
    """For a test module's `receivers` fixture: start receivers on 127.0.0.1, which the
    tests' WEBHOOK_ALLOWED_HOSTS lists, and stop them after the test."""
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.MICROSOFT_ALLOW_HTTP = True
    started: list[Receiver] = []

    def start(*answers: Answer) -> Receiver:
        started.append(Receiver(*answers))
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()
