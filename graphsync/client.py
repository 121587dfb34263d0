"""The one place that talks to Microsoft Graph.

Every request takes its throttle budgets first (graphsync.throttle), carries a token from the
token service (connections.tokens), and maps Graph's errors to classes the engine branches on.
Paging follows `@odata.nextLink` as given; `$batch` sends up to 20 requests in one and hands each
answer back on its own, so a throttled item can be retried alone after its own `Retry-After`.

Requests go through core.outbound (no internal hosts, no redirects, no plain http:// without
MICROSOFT_ALLOW_HTTP), and a link is followed only on the app's own Graph host, or a nextLink
could carry the bearer token anywhere. Budgets are the app registration's own
(graphsync.throttle, `owner_key`).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
from django.conf import settings
from django.db import connections
from django.utils import timezone

from connections import tokens
from connections.models import Connection
from core import metrics, outbound, redis_client
from graphsync import budgets, throttle
from graphsync.budgets import Budget
from graphsync.throttle import Scope, Throttle, ThrottleWait

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
BATCH_LIMIT = 20
TOKEN_MARGIN = timedelta(minutes=2)
#: The most of Graph's own error text that is kept (a run's error, the admin's pages).
MAX_ERROR_TEXT = 300


class GraphError(Exception):
    """An error answer from Graph, keeping Microsoft's code (branch on it, never the message)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: str = "",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.headers = headers or {}


class SyncStateExpired(GraphError):
    """410 or a resync code: the delta token is gone; start again from `location` if given."""

    @property
    def location(self) -> str | None:
        return self.headers.get("Location") or self.headers.get("location")


class AccessDenied(GraphError):
    """403: the app lacks a permission for this resource (do not retry)."""


class MailboxNotEnabled(GraphError):
    """404 MailboxNotEnabledForRESTAPI: the user has no Exchange Online mailbox."""


class TransientGraphError(GraphError):
    """5xx or network trouble that outlasted our retries."""


RESYNC_CODES = {
    "syncstatenotfound",
    "resyncrequired",
    "resyncchangesapplydifferences",
    "resyncchangesuploaddifferences",
}


def error_for(status: int, body: Any, headers: dict[str, str]) -> GraphError:
    # Only Graph's shape, {"error": {"code", "message"}}, is read, and cut short: anything else
    # is known by its status alone (docs/microsoft.md, "Graph errors").
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = _cut(error.get("code"), 100) or f"http{status}"
    inner = error.get("innerError") or error.get("innererror") or {}
    inner_code = _cut(inner.get("code"), 100) if isinstance(inner, dict) else ""
    message = _cut(error.get("message"), MAX_ERROR_TEXT)
    request_id = _cut(inner.get("request-id"), 100) if isinstance(inner, dict) else ""
    args = (status, code, message, request_id, headers)
    # Codes are compared case-insensitively: the live service sends SyncStateNotFound where
    # the documentation says syncStateNotFound (docs/microsoft.md, "Delta and resync").
    if status == 410 or code.lower() in RESYNC_CODES or inner_code.lower() in RESYNC_CODES:
        return SyncStateExpired(*args)
    if code == "MailboxNotEnabledForRESTAPI":
        return MailboxNotEnabled(*args)
    if status == 403:
        return AccessDenied(*args)
    if status >= 500:
        return TransientGraphError(*args)
    return GraphError(*args)


def _cut(value: Any, limit: int) -> str:
    text = str(value or "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_link: str | None
    delta_link: str | None

    @classmethod
    def of(cls, body: dict[str, Any]) -> Page:
        if "value" not in body:  # a single entity such as /me
            return cls([body], None, None)
        return cls(body["value"], body.get("@odata.nextLink"), body.get("@odata.deltaLink"))


@dataclass
class Meter:
    """What a run spent: stored on the SyncRun."""

    requests: int = 0
    throttled: int = 0
    seconds_waited: float = 0.0


@dataclass
class Plan:
    """The budgets a request spends, and their costs."""

    budgets: dict[Scope, Budget]
    costs: dict[Scope, int] = field(default_factory=dict)

    @property
    def scopes(self) -> tuple[Scope, ...]:
        return tuple(self.budgets)

    @property
    def cooled(self) -> tuple[Scope, ...]:
        """The scopes a 429 or 503 to this request cools down: its own (the mailbox, the
        tenant's directory or drive), not the app-wide one shared by every mailbox and tenant.
        Graph's answer does not say which limit was hit; the app-wide limit is far above what
        the app budget lets through, so the narrow one is the likely culprit, and cooling the
        app would stop every other mailbox of an organisation-wide sync for one mailbox's 429.
        A plan of the app scope alone cools that."""
        narrow = tuple(scope for scope in self.budgets if scope.kind != "app")
        return narrow or self.scopes


@dataclass
class BatchItem:
    id: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class BatchAnswer:
    id: str
    status: int
    headers: dict[str, str]
    body: Any


_throttle: Throttle | None = None


def shared_throttle() -> Throttle:
    global _throttle
    if _throttle is None:
        _throttle = Throttle(redis_client.shared())
    return _throttle


def budget(kind: str) -> Budget:
    """The limits Graphport spends against (graphsync.budgets.LIMITS, as configured)."""
    return budgets.configured(kind, settings.GRAPH_BUDGETS)


class GraphClient:
    def __init__(
        self, connection: Connection, meter: Meter | None = None, throttle_: Throttle | None = None
    ):
        self.connection = connection
        self.app = connection.app
        self.base = self.app.graph_url
        self.meter = meter or Meter()
        self.throttle = throttle_ or shared_throttle()
        self.http = outbound.Session()
        self.http.headers["Accept"] = "application/json"
        self._token: str | None = None
        self._token_until: datetime | None = None
        self._ahead: ThreadPoolExecutor | None = None

    # --- scopes -------------------------------------------------------------------------------

    @property
    def owner(self) -> str:
        """Whose budgets these requests spend: this app registration on its Graph host. Not
        the client id, which another tenant can register too (graphsync.throttle)."""
        return throttle.owner_key(self.app.pk, urlsplit(self.base).netloc)

    def plan(self, kind: str, cost: int = 1, mailbox_user: str = "") -> Plan:
        """The budgets of one request of `kind` (mailbox, directory, drive). A mailbox is the
        connection's own user's, or `mailbox_user`'s (an organisation-wide job's)."""
        owner = self.owner
        tenant = self.connection.ms_tenant_id
        # A mailbox is named within its Microsoft tenant: an object id is only unique there.
        mailbox = f"{tenant}/{mailbox_user or self.connection.ms_object_id}"
        scope = {
            "mailbox": lambda: Scope.mailbox(owner, mailbox),
            "directory": lambda: Scope.tenant_directory(owner, tenant),
            "drive": lambda: Scope.tenant_drive(owner, tenant),
        }[kind]()
        app_scope = Scope.app(owner)
        return Plan(
            budgets={scope: budget(kind), app_scope: budget("app")},
            costs={scope: cost, app_scope: 1},
        )

    def subscription_plan(self) -> Plan:
        """Subscription writes have budgets of their own: 500 per 20 s per app + tenant, 2,000
        per 20 s per app; each also counts against the app's overall budget (docs/microsoft.md,
        "Throttling limits and budgets")."""
        owner = self.owner
        tenant = Scope("tenant-subscriptions", owner, self.connection.ms_tenant_id)
        writes = Scope("app-subscriptions", owner, "all")
        app_scope = Scope.app(owner)
        return Plan(
            budgets={
                tenant: budget("subscriptions"),
                writes: budget("subscriptions_app"),
                app_scope: budget("app"),
            },
            costs={tenant: 1, writes: 1, app_scope: 1},
        )

    # --- tokens -------------------------------------------------------------------------------

    def token(self, renew: bool = False) -> str:
        now = timezone.now()
        if renew:
            # Graph said the token is bad (401): one forced refresh, shared by every worker.
            connection = tokens.refresh(self.connection.pk, force=True)
            self._token, self._token_until = (
                connection.access_token,
                connection.access_token_expires_at,
            )
        elif (
            self._token is None
            or self._token_until is None
            or self._token_until - now < TOKEN_MARGIN
        ):
            connection = tokens.usable_token(self.connection.pk)
            self._token, self._token_until = (
                connection.access_token,
                connection.access_token_expires_at,
            )
        return self._token

    # --- requests -----------------------------------------------------------------------------

    def get_page(self, url: str, plan: Plan, headers: dict[str, str] | None = None) -> Page:
        return Page.of(self.request("GET", url, plan, headers=headers))

    def prefetch_page(
        self, url: str, plan: Plan, headers: dict[str, str] | None = None
    ) -> Future[Page]:
        """`get_page` on a background thread, so the caller can write the previous page while
        Graph prepares this one (a sync otherwise waits for Graph and the database in turn).
        One at a time: the session is never used by two threads at once, provided the caller
        takes the result before it asks for anything else."""
        if self._ahead is None:
            self._ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="graph-prefetch")
        return self._ahead.submit(self._get_page_in_background, url, plan, headers)

    def _get_page_in_background(self, url: str, plan: Plan, headers: dict[str, str] | None) -> Page:
        try:
            return self.get_page(url, plan, headers)
        finally:
            # A token refresh (an expiring token, or a 401) reads the connection row from this
            # thread: close the thread's own database connection rather than leak it.
            connections.close_all()

    def request(
        self,
        method: str,
        url: str,
        plan: Plan,
        headers: dict[str, str] | None = None,
        body: Any = None,
        attempts: int = MAX_ATTEMPTS,
    ) -> Any:
        if not url.startswith("http"):
            url = self.base + url
        elif not self.on_graph_host(url):
            # Only Graph's own links are followed: a nextLink, deltaLink or notification URL
            # elsewhere would carry this connection's bearer token to another host.
            raise GraphError(
                0,
                "refused",
                f"A link to {outbound.host_of(url)} is not on this app's Graph host "
                f"({outbound.host_of(self.base)}): not followed.",
            )
        max_sleep = settings.GRAPH_MAX_SLEEP_SECONDS
        renewed = False
        for attempt in range(1, attempts + 1):
            with self.throttle.slot(
                plan.budgets, cost=plan.costs or 1, max_sleep=max_sleep
            ) as grant:
                self.meter.seconds_waited += grant.waited
                request_headers = {"Authorization": f"Bearer {self.token()}", **(headers or {})}
                try:
                    response = self.http.request(
                        method,
                        url,
                        headers=request_headers,
                        data=orjson.dumps(body) if body is not None else None,
                        timeout=settings.MICROSOFT_HTTP_TIMEOUT,
                    )
                except outbound.InternalHost as exc:
                    # Reads as any unreachable host, and is not retried: it will not change.
                    raise self._unreachable(url, exc) from exc
                except outbound.Refused as exc:  # a redirect, or plain http://
                    raise GraphError(0, "refused", str(exc)) from exc
                except requests.RequestException as exc:
                    self.meter.requests += 1
                    metrics.GRAPH_REQUESTS.labels(status=metrics.NO_ANSWER).inc()
                    if attempt == attempts:
                        raise self._unreachable(url, exc) from exc
                    self._pause(plan, None, attempt, max_sleep)
                    continue
            self.meter.requests += 1
            status = response.status_code
            metrics.GRAPH_REQUESTS.labels(status=metrics.status_label(status)).inc()
            if status in throttle.RETRYABLE_STATUSES:
                self.meter.throttled += 1
                if attempt == attempts:
                    raise error_for(status, _json(response), dict(response.headers))
                self._pause(plan, response.headers.get("Retry-After"), attempt, max_sleep)
                continue
            if status == 401 and not renewed:
                error = error_for(status, _json(response), dict(response.headers))
                if error.code == "InvalidAuthenticationToken":
                    renewed = True
                    self.token(renew=True)
                    continue
                raise error
            if status >= 400:
                raise error_for(status, _json(response), dict(response.headers))
            return _json(response) if response.content else None
        raise TransientGraphError(0, "attempts", "too many attempts")  # pragma: no cover

    @staticmethod
    def _unreachable(url: str, exc: Exception) -> TransientGraphError:
        """One message for every failure to connect, whatever the cause (refused, timed out, no
        such name, an internal address): the details go to the log only."""
        host = outbound.host_of(url)
        logger.info("Graph request to %s failed: %s: %s", host, type(exc).__name__, exc)
        return TransientGraphError(0, "network", f"{host} could not be reached")

    def _pause(self, plan: Plan, retry_after: str | None, attempt: int, max_sleep: float) -> None:
        """Cool the scopes down for everyone; sleep through a short wait, give a long one back
        to the task (which re-enqueues itself) instead of holding the worker."""
        delay = self.throttle.throttled(plan.cooled, retry_after, attempt)
        if delay > max_sleep:
            raise ThrottleWait(delay, plan.scopes[0], "retry-after")
        time.sleep(delay)
        self.meter.seconds_waited += delay
        reason = "backoff" if retry_after is None else "retry-after"
        metrics.GRAPH_WAIT.labels(scope=plan.cooled[0].kind, reason=reason).inc(delay)

    # --- $batch -------------------------------------------------------------------------------

    def batch(self, items: list[BatchItem], plan: Plan) -> list[BatchAnswer]:
        """One POST /$batch; answers in request order. Each item counts against the limits on
        its own (docs/microsoft.md, "Batching"): `plan` must carry the items' summed costs."""
        if not 1 <= len(items) <= BATCH_LIMIT:
            raise ValueError(f"a batch holds 1 to {BATCH_LIMIT} requests")
        requests_ = [
            {
                "id": item.id,
                "method": "GET",
                "url": self.relative(item.url),
                **({"headers": item.headers} if item.headers else {}),
            }
            for item in items
        ]
        body = self.request(
            "POST",
            "/$batch",
            plan,
            headers={"Content-Type": "application/json"},
            body={"requests": requests_},
        )
        by_id = {answer["id"]: answer for answer in body.get("responses", [])}
        answers = []
        for item in items:
            answer = by_id.get(item.id, {"status": 500, "headers": {}, "body": {}})
            answers.append(
                BatchAnswer(
                    item.id,
                    int(answer.get("status", 500)),
                    answer.get("headers") or {},
                    answer.get("body"),
                )
            )
            metrics.GRAPH_REQUESTS.labels(status=metrics.status_label(answers[-1].status)).inc()
            if answers[-1].status in throttle.RETRYABLE_STATUSES:
                self.meter.throttled += 1
        self.meter.requests += len(items) - 1  # each item counts as a request of its own
        return answers

    def on_graph_host(self, url: str) -> bool:
        """Whether an absolute URL is on the app's Graph host (same scheme, host and port)."""
        ours, theirs = urlsplit(self.base), urlsplit(url)
        try:
            return (ours.scheme, ours.hostname, ours.port) == (
                theirs.scheme.lower(),
                theirs.hostname,
                theirs.port,
            ) and not (theirs.username or theirs.password)
        except ValueError:  # a port that is not a number
            return False

    def relative(self, url: str) -> str:
        """$batch URLs are relative to the version root."""
        return url[len(self.base) :] if url.startswith(self.base) else url

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.shutdown(wait=True, cancel_futures=True)
            self._ahead = None
        self.http.close()


def _json(response: requests.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
