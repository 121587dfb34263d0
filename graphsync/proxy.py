"""The Graph proxy: a customer's backend calls Microsoft Graph through one of its connections.

The API layer (portal.api) authenticates the key and hands the request to `forward`, which sends
it to the connection's own Graph root only, with the connection's token, through the same Redis
throttle budgets as the sync workers (graphsync.throttle), so the customer's calls and the syncs
never throttle each other. Whatever Graphport refuses is a `ProxyProblem`, which the API layer
answers as an RFC 9457 problem document; whatever Graph answers is passed back, body streamed.

A web process is never held long: waiting for the budgets and for Graph's own `Retry-After`
together may take at most API_PROXY_MAX_WAIT_SECONDS; a longer wait answers 429 with
`Retry-After` and sends nothing. GETs and HEADs are retried on 429/503/504 within that wait;
writes are sent once, since a retried POST could create twice, and audited (never their body).
"""

from __future__ import annotations

import http.cookiejar
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote

import orjson
import requests
import urllib3
from django.conf import settings

from connections import audit, tokens
from connections.models import AuditEvent, Connection
from core import metrics, outbound
from graphsync import throttle
from graphsync.budgets import directory_cost
from graphsync.client import GraphClient, Plan, budget
from graphsync.throttle import Scope, ThrottleWait

logger = logging.getLogger(__name__)

#: The largest request body sent on; Graph's own JSON writes are far smaller (large uploads go
#: through upload sessions, which hand out URLs of their own).
MAX_REQUEST_BYTES = 4 * 1024 * 1024
#: The most of Graph's answer passed back: past it the answer is refused, or its stream cut.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
MAX_PATH_LENGTH = 2_048
CHUNK_BYTES = 64 * 1024
#: Sends of one GET or HEAD at most, as Microsoft's SDKs retry three times; the wait budget
#: usually ends them first.
MAX_ATTEMPTS = 3
#: Of a 401 body, the most read to find Graph's error code.
MAX_ERROR_BYTES = 64 * 1024

READ_METHODS = frozenset({"GET", "HEAD"})
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})

#: The caller's request headers sent on: content negotiation, Graph's `Prefer` options
#: (`odata.maxpagesize`, `outlook.body-content-type`), optimistic concurrency, `$count` on the
#: directory, and the caller's id for Microsoft's support. Never `Authorization` (the caller's
#: key must not reach Microsoft), cookies, or hop-by-hop headers.
REQUEST_HEADERS = (
    "Content-Type",
    "Accept",
    "Prefer",
    "If-Match",
    "If-None-Match",
    "ConsistencyLevel",
    "client-request-id",
)
#: Graph's response headers passed back: what the body is, its version (for `If-Match`), when to
#: come back, the ids Microsoft's support asks for, and which `Prefer` options were applied. Not
#: Content-Length or Content-Encoding (requests decodes the body, and a cut stream is shorter),
#: not Set-Cookie (it would land on the portal's domain), nor hop-by-hop or Microsoft's internal
#: diagnostics. `Location` (201 Created, 202 Accepted, 410 Gone) is passed only on the Graph host:
#: elsewhere it is a URL this proxy does not vouch for.
RESPONSE_HEADERS = (
    "Content-Type",
    "ETag",
    "Retry-After",
    "request-id",
    "client-request-id",
    "Preference-Applied",
)

#: Outlook's resources under `me/` or `users/{id}/`: they spend the app + mailbox budget
#: (docs/microsoft.md, "Throttling limits and budgets").
OUTLOOK = frozenset(
    {
        "messages",
        "mailfolders",
        "sendmail",
        "mailboxsettings",
        "events",
        "calendar",
        "calendars",
        "calendarview",
        "contacts",
        "contactfolders",
    }
)
#: Roots whose requests spend the app + tenant directory budget (resource units).
DIRECTORY = frozenset({"me", "users", "groups", "directoryobjects", "organization"})

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)
#: Characters sent as themselves in a path (RFC 3986 pchar); `%` is not among them.
_PATH_SAFE = "/!$&'()*+,;=:@-._~"

#: Every problem the proxy raises: its stable slug, status and title. `forward`'s callers
#: branch on the slug; the status says whose move it is.
PROBLEMS: dict[str, tuple[int, str]] = {
    "invalid-path": (400, "Invalid Graph path"),
    "invalid-query": (400, "Invalid query string"),
    "invalid-header": (400, "Invalid request header"),
    "body-not-allowed": (400, "Body not allowed"),
    "write-not-allowed": (403, "Writes not allowed"),
    "method-not-allowed": (405, "Method not allowed"),
    "reconnect-needed": (409, "Reconnect needed"),  # the connection's user must sign in again
    "connection-inactive": (409, "Connection inactive"),  # disabled or revoked
    "body-too-large": (413, "Request body too large"),
    "throttled": (429, "Throttled"),  # Graphport's budgets: nothing was sent
    "graph-unreachable": (502, "Microsoft Graph unreachable"),
    "graph-redirect": (502, "Redirect not followed"),
    "response-too-large": (502, "Response too large"),
    "token-unavailable": (503, "Token unavailable"),  # for now, or until the app is fixed
}


class ProxyProblem(Exception):
    """Why the proxy refused, or could not complete, a call: `type` is a stable slug callers
    branch on (PROBLEMS), `field` the part of the request at fault, `retry_after` seconds when
    known."""

    def __init__(
        self,
        status: int,
        type: str,
        title: str,
        detail: str,
        field: str | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.field = field
        self.retry_after = retry_after

    @classmethod
    def of(
        cls, slug: str, detail: str, *, field: str | None = None, retry_after: int | None = None
    ) -> ProxyProblem:
        status, title = PROBLEMS[slug]
        return cls(status, slug, title, detail, field, retry_after)


class BodyStream(Iterator[bytes]):
    """Graph's answer body in chunks, at most MAX_RESPONSE_BYTES in all. Read to its end or
    closed, it closes Graph's response and frees the throttle slot; a generator would not do,
    as closing one that never started skips its `finally`."""

    def __init__(self, chunks: Iterator[bytes], close: Callable[[], None]):
        self._chunks = chunks
        self._close = close
        self._passed = 0
        self._closed = False

    def __next__(self) -> bytes:
        if self._closed:
            raise StopIteration
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self.close()
            raise
        except requests.RequestException as exc:
            self.close()
            raise _unreachable("reading its answer", exc) from None
        self._passed += len(chunk)
        if self._passed > MAX_RESPONSE_BYTES:
            # The status has gone out already: raising makes the server drop the connection,
            # so the caller cannot take a cut body for a whole one.
            self.close()
            logger.warning("proxied Graph answer cut at %s bytes", MAX_RESPONSE_BYTES)
            raise _too_large()
        return chunk

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()


@dataclass
class ProxyAnswer:
    """Graph's answer: status, the headers passed back, and the body as a stream. Close it (or
    read `chunks` to the end) to free Graph's connection and the throttle slot."""

    status: int
    headers: dict[str, str]
    chunks: BodyStream

    def close(self) -> None:
        self.chunks.close()

    def __enter__(self) -> ProxyAnswer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def forward(
    connection: Connection,
    method: str,
    path: str,
    query: str,
    body: bytes | None,
    content_type: str | None,
    *,
    api_key_prefix: str,
    accept: str | None = None,
    write_allowed: bool = False,
    headers: Mapping[str, str] | None = None,
) -> ProxyAnswer:
    """Send one request to the connection's Graph root and hand back Graph's answer.

    `path` is relative to the Graph root (`me/messages`) and decoded, as the URL resolver hands
    it over: every character is sent as itself, `%` included. `query` is the raw query string.
    `headers` are the caller's request headers, of which only REQUEST_HEADERS are sent on;
    `content_type` and `accept` override theirs. Raises ProxyProblem for anything refused.
    Close the answer (or read it to the end): until then it holds Graph's connection and a
    throttle slot (whose lease frees it after a minute at worst).
    """
    method = method.upper()
    _check_method(method, write_allowed)
    client = GraphClient(connection)
    client.close()  # only its plans, host check and throttle are used: its session never is
    url = _url(client, path, query)
    _check_body(method, body)
    call = _Call(
        client,
        method,
        url,
        body,
        _request_headers(headers, content_type if body is not None else None, accept),
        _plan(client, method, path, query),
    )
    try:
        return call.run()
    finally:
        if method in WRITE_METHODS and call.sent:
            _audit_write(connection, method, path, call.graph_status, api_key_prefix)


# --- checking the request -------------------------------------------------------------------


def _check_method(method: str, write_allowed: bool) -> None:
    if method not in READ_METHODS | WRITE_METHODS:
        raise ProxyProblem.of(
            "method-not-allowed",
            f"{method} is not proxied: use GET, HEAD, POST, PATCH, PUT or DELETE.",
        )
    if method in WRITE_METHODS and not write_allowed:
        raise ProxyProblem.of(
            "write-not-allowed", f"{method} writes to Microsoft Graph: this API key may only read."
        )


def _url(client: GraphClient, path: str, query: str) -> str:
    why = _path_problem(path)
    base = client.base.rstrip("/")
    url = f"{base}/{quote(path, safe=_PATH_SAFE)}"
    # Belt and braces: whatever the checks above missed must still land under the Graph root.
    if why is None and not (url.startswith(base + "/") and client.on_graph_host(url)):
        why = "does not stay under the connection's Graph root."
    if why is not None:
        raise ProxyProblem.of("invalid-path", f"path: {why}", field="path")
    if _CONTROL.search(query):
        raise ProxyProblem.of(
            "invalid-query", "query: control characters are not allowed.", field="query"
        )
    return f"{url}?{query}" if query else url


def _path_problem(path: str) -> str | None:
    """Why `path` is not a path under the Graph root, or None. Each layer of percent-encoding
    is checked, so a dot segment or a separator hidden as `%2e%2e` or `%252f` is found too:
    some server between here and Microsoft might decode it."""
    if not path:
        return "is empty: give a Graph path such as me/messages."
    if len(path) > MAX_PATH_LENGTH:
        return f"is longer than {MAX_PATH_LENGTH:,} characters."
    layer = path
    for _ in range(3):
        if layer.startswith("/") or ":" in layer.split("/", 1)[0]:
            return "must be relative to the Graph root (me/messages), not a URL or absolute."
        if "\\" in layer:
            return "must not contain backslashes."
        if _CONTROL.search(layer):
            return "must not contain control characters."
        if any(segment in (".", "..") for segment in layer.split("/")):
            return "must not contain . or .. segments."
        if _ENCODED_SEPARATOR.search(layer):
            return "must not contain encoded slashes or backslashes (%2F, %5C)."
        decoded = unquote(layer)
        if decoded == layer:
            return None
        layer = decoded
    return "is percent-encoded too many times."


def _check_body(method: str, body: bytes | None) -> None:
    if body is None:
        return
    if method in READ_METHODS and body:
        raise ProxyProblem.of("body-not-allowed", f"body: {method} takes no body.", field="body")
    if len(body) > MAX_REQUEST_BYTES:
        raise ProxyProblem.of(
            "body-too-large", f"body: at most {MAX_REQUEST_BYTES:,} bytes.", field="body"
        )


def _request_headers(
    given: Mapping[str, str] | None, content_type: str | None, accept: str | None
) -> dict[str, str]:
    lowered = {name.lower(): value for name, value in (given or {}).items()}
    chosen = {name: lowered[name.lower()] for name in REQUEST_HEADERS if name.lower() in lowered}
    chosen.pop("Content-Type", None)  # only with a body, and from `content_type`
    if content_type:
        chosen["Content-Type"] = content_type
    if accept:
        chosen["Accept"] = accept
    for name, value in chosen.items():
        if _CONTROL.search(value):
            raise ProxyProblem.of(
                "invalid-header", f"{name}: control characters are not allowed.", field=name
            )
    return chosen


# --- which budgets a request spends ---------------------------------------------------------


def _plan(client: GraphClient, method: str, path: str, query: str) -> Plan:
    """The budgets the workers spend for the same resource: Outlook under a user spends that
    mailbox's, OneDrive and SharePoint the tenant's drive budget, the directory its resource
    units, subscription writes theirs, anything else (Teams, reports, `$batch`) the app's only.
    Every request also spends the app's (GraphClient.plan)."""
    segments = [segment.split("(", 1)[0].lower() for segment in path.split("/")]
    first = segments[0]
    if first == "me":
        subject, rest = "", segments[1:]
    elif first == "users" and len(segments) > 1:
        subject, rest = segments[1], segments[2:]
    else:
        subject, rest = None, segments
    under_user = subject is not None and bool(rest)
    if first == "subscriptions" and method in WRITE_METHODS:
        return client.subscription_plan()
    if under_user and rest[0] in OUTLOOK:
        return _mailbox_plan(client, subject or "")
    if (under_user and rest[0] in ("drive", "drives")) or first in ("drives", "sites"):
        return client.plan("drive")
    if first in DIRECTORY:
        return client.plan("directory", _directory_cost(segments, query))
    app = Scope.app(client.owner)
    return Plan(budgets={app: budget("app")}, costs={app: 1})


def _mailbox_plan(client: GraphClient, subject: str) -> Plan:
    """`subject` is "" for `me`, else the id or UPN after `users/`."""
    connection = client.connection
    own = {connection.ms_object_id.lower(), connection.user_principal_name.lower()} - {""}
    if not subject or subject in own:
        return client.plan("mailbox")
    # Another mailbox (shared, or any mailbox for an app-only connection) is a scope of its own
    # at Microsoft: charging the connection's would slow its syncs, and a 429 from the other
    # mailbox would cool them down. Named as addressed, so its id and its UPN count apart.
    scope = Scope.mailbox(client.owner, f"{connection.ms_tenant_id}/{subject}")
    app = Scope.app(client.owner)
    return Plan(budgets={scope: budget("mailbox"), app: budget("app")}, costs={scope: 1, app: 1})


def _directory_cost(segments: list[str], query: str) -> int:
    """Resource units, as Microsoft counts them (docs/microsoft.md, "Throttling limits and
    budgets"): users 2, group members 3, transitive members 5, others 1, less `$select`/`$top`."""
    last = segments[-1]
    if last == "transitivemembers":
        base = 5
    elif last == "members":
        base = 3
    elif segments[0] in ("me", "users"):
        base = 2
    else:
        base = 1
    params = parse_qs(query)
    top = (params.get("$top") or [""])[0]
    return directory_cost(base, select="$select" in params, top=int(top) if top.isdigit() else None)


# --- sending --------------------------------------------------------------------------------


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """One session serves every tenant's calls on its thread: a cookie one connection's answer
    set must never ride along on another's request."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False


_local = threading.local()


def _session() -> outbound.Session:
    """A session per thread, so Graph's connections (and their TLS handshakes) are kept alive
    from one call to the next; requests' sessions are not safe to share between threads."""
    session = getattr(_local, "session", None)
    if session is None:
        session = outbound.Session()
        session.cookies.set_policy(_NoCookies())
        _local.session = session
    return session


class _Call:
    """One proxied request through its attempts. `sent` and `graph_status` are for the audit."""

    def __init__(
        self,
        client: GraphClient,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str],
        plan: Plan,
    ):
        self.client = client
        self.method = method
        self.url = url
        self.body = body
        self.headers = headers
        self.plan = plan
        self.sent = False
        self.graph_status: int | None = None
        self._token = ""
        self._renewed = False
        self._attempt = 0
        self._deadline = 0.0

    def run(self) -> ProxyAnswer:
        self._token = _token(self.client.connection.pk)
        self._deadline = time.monotonic() + _max_wait()
        while True:
            self._attempt += 1
            response, release = self._send()
            try:
                answer = self._judge(response, release)
            except BaseException:
                release.close()  # whatever went wrong, the slot and the connection go back
                raise
            if answer is not None:
                return answer
            release.close()

    def _judge(self, response: requests.Response, release: ExitStack) -> ProxyAnswer | None:
        """Graph's answer to pass back, or None to send the request again."""
        status = response.status_code
        last = self._attempt >= MAX_ATTEMPTS
        if status in throttle.RETRYABLE_STATUSES:
            # The scopes cool down for the workers too, exactly as after their own 429.
            delay = self.client.throttle.throttled(
                self.plan.cooled, response.headers.get("Retry-After"), self._attempt
            )
            if self.method in READ_METHODS and not last and delay <= self._left():
                return None  # the next slot waits out the cooldown just set
            return _answer(self.client, response, release, retry_after=delay)
        if status == 401 and not self._renewed and not last:
            head = _head(response)
            if _error_code(head) != "InvalidAuthenticationToken":
                return _answer(self.client, response, release, head=head)
            # Graph refused the token before doing anything, writes included: one forced
            # refresh, shared with every worker (as GraphClient does), then the same request.
            release.close()
            self._renewed = True
            self._token = _token(self.client.connection.pk, renew=True)
            return None
        return _answer(self.client, response, release)

    def _send(self) -> tuple[requests.Response, ExitStack]:
        """Take the budgets (waiting at most what is left of the wait), then send. The slot is
        held until the answer is read or closed: Outlook counts a request in flight until then."""
        release = ExitStack()
        try:
            release.enter_context(
                self.client.throttle.slot(
                    self.plan.budgets, cost=self.plan.costs, max_sleep=self._left()
                )
            )
        except ThrottleWait as wait:
            raise ProxyProblem.of(
                "throttled",
                f"Microsoft Graph's budget for this connection ({wait.scope.kind}) is spent for "
                f"{wait.seconds:.1f} s more: try again after Retry-After.",
                retry_after=_whole(wait.seconds),
            ) from None
        self.sent = True
        try:
            response = _session().request(
                self.method,
                self.url,
                headers={**self.headers, "Authorization": f"Bearer {self._token}"},
                data=self.body,
                stream=True,
                timeout=settings.MICROSOFT_HTTP_TIMEOUT,
            )
        except outbound.Redirected as exc:
            release.close()
            self.graph_status = exc.response.status_code if exc.response is not None else None
            metrics.GRAPH_REQUESTS.labels(status=metrics.status_label(self.graph_status)).inc()
            raise ProxyProblem.of(
                "graph-redirect",
                f"Microsoft Graph answered with a redirect (HTTP {self.graph_status}), which the "
                "proxy does not follow; for file content use the item's "
                "@microsoft.graph.downloadUrl.",
            ) from None
        except requests.RequestException as exc:
            release.close()
            metrics.GRAPH_REQUESTS.labels(status=metrics.NO_ANSWER).inc()
            raise _unreachable("sending the request", exc) from None
        release.callback(response.close)
        self.graph_status = response.status_code
        metrics.GRAPH_REQUESTS.labels(status=metrics.status_label(self.graph_status)).inc()
        return response, release

    def _left(self) -> float:
        return max(0.0, self._deadline - time.monotonic())


def _answer(
    client: GraphClient,
    response: requests.Response,
    release: ExitStack,
    *,
    head: bytes = b"",
    retry_after: float | None = None,
) -> ProxyAnswer:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise _too_large()  # the caller closes `release`
    headers = {
        name: response.headers[name] for name in RESPONSE_HEADERS if name in response.headers
    }
    location = response.headers.get("Location")
    if location and client.on_graph_host(location):
        headers["Location"] = location
    if retry_after is not None and "Retry-After" not in headers:
        # Graph sent none: the cooldown the scopes now have is when the budget opens again.
        headers["Retry-After"] = str(_whole(retry_after))
    chunks: Iterator[bytes] = response.iter_content(CHUNK_BYTES)
    if head:
        chunks = _prefixed(head, chunks)
    return ProxyAnswer(response.status_code, headers, BodyStream(chunks, release.close))


def _prefixed(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield head
    yield from rest


def _head(response: requests.Response) -> bytes:
    """The start of an error body (all of a normal one), read to find its error code."""
    try:
        return response.raw.read(MAX_ERROR_BYTES, decode_content=True) or b""
    except (urllib3.exceptions.HTTPError, OSError) as exc:  # the connection broke mid-body
        raise _unreachable("reading its answer", exc) from None


def _error_code(head: bytes) -> str:
    try:
        error = orjson.loads(head).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return str(error.get("code") or "") if isinstance(error, dict) else ""


# --- tokens, problems, audit ----------------------------------------------------------------


def _token(connection_id: int, renew: bool = False) -> str:
    """The connection's access token; a token that cannot be had is a problem whose status
    says whose move it is (docs/microsoft.md, "Error codes and how Graphport classifies them")."""
    try:
        if renew:
            return tokens.refresh(connection_id, force=True).access_token
        return tokens.access_token(connection_id)
    except tokens.ReconnectNeeded as exc:
        raise ProxyProblem.of(
            "reconnect-needed",
            f"The connection's user must connect again before Graph can be called: {exc}",
        ) from None
    except tokens.TransientFailure as exc:
        raise ProxyProblem.of(
            "token-unavailable",
            f"No access token can be had from Microsoft right now: {exc}",
            retry_after=_whole(exc.retry_in) if exc.retry_in is not None else None,
        ) from None
    except tokens.AppCredentialsBroken as exc:
        raise ProxyProblem.of(
            "token-unavailable",
            f"The app registration's credentials must be fixed by its administrator: {exc}",
        ) from None
    except tokens.TokenUnavailable as exc:  # disabled or revoked: no token until reconnected
        raise ProxyProblem.of("connection-inactive", f"{exc} Graph cannot be called.") from None


def _unreachable(doing: str, exc: Exception) -> ProxyProblem:
    # One message whatever the cause, as GraphClient does: the details go to the log only.
    logger.info("proxied Graph request failed %s: %s: %s", doing, type(exc).__name__, exc)
    host = exc.host if isinstance(exc, outbound.Refused) else "Microsoft Graph"
    return ProxyProblem.of("graph-unreachable", f"{host} could not be reached ({doing}).")


def _too_large() -> ProxyProblem:
    return ProxyProblem.of(
        "response-too-large",
        f"Microsoft Graph's answer is larger than {MAX_RESPONSE_BYTES:,} bytes: ask for less "
        "($select, $top) or page through it.",
    )


def _audit_write(
    connection: Connection, method: str, path: str, status: int | None, api_key_prefix: str
) -> None:
    """Every write sent, whatever its outcome; the body never (it may hold mail, or secrets).
    `status` is Graph's, None when no answer came (the write may still have been done)."""
    outcome = status if status is not None else "no answer"
    audit.record(
        AuditEvent.Kind.PROXY_WRITE,
        f"{method} {path} → {outcome}",
        connection=connection,
        api_key=api_key_prefix,
        method=method,
        path=path,
        status=status,
    )


def _max_wait() -> float:
    return float(getattr(settings, "API_PROXY_MAX_WAIT_SECONDS", 3))


def _whole(seconds: float) -> int:
    """Retry-After in whole seconds, never 0 (which invites an immediate retry)."""
    return max(1, math.ceil(seconds))
