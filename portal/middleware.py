"""The portal's middleware of its own: request ids for the logs, request metrics, the health
probes, and 503 for requests that need Redis while it is away.

Redis away: admin actions (run now, refresh now, ...), the connect flow and the webhooks queue
work through Redis, the Celery broker (docs/architecture.md, "Processes"). When it cannot be
reached, redis-py raises ConnectionError or TimeoutError and kombu, publishing a task,
OperationalError; nothing is wrong with the request, so the person (or Microsoft, which
retries) is told to try again.
"""

from __future__ import annotations

import logging
import time

import kombu.exceptions
import redis.exceptions
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.utils.html import escape

from core import logs, metrics
from portal import views

logger = logging.getLogger(__name__)

UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)
MESSAGE = "Redis (the task queue) is unavailable; try again shortly."
RETRY_AFTER_SECONDS = 30


class RedisUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, UNAVAILABLE):
            return None
        logger.error(
            "%s %s answered 503, Redis unavailable: %s: %s",
            request.method,
            request.path,
            type(exception).__name__,
            exception,
        )
        if "text/html" in request.headers.get("Accept", ""):
            response = HttpResponse(
                "<!doctype html><title>Service unavailable</title>"
                f"<h1>Service unavailable</h1><p>{escape(MESSAGE)}</p>",
                status=503,
            )
        else:
            response = HttpResponse(MESSAGE, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        # Logged above, once: Django would add a second line for any 5xx answer.
        response._has_been_logged = True
        return response


class RequestMetricsMiddleware:
    """Counts and times every answer by its view (core.metrics): the URL pattern's name, never
    the path, which carries ids. A request answered before its URL was resolved (a redirect to
    HTTPS or to the second factor) is resolved here; a path that matches nothing counts as
    "unmatched"."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        view = _view_name(request)
        metrics.HTTP_REQUESTS.labels(
            view=view,
            method=metrics.method_label(request.method),
            status=metrics.status_label(response.status_code),
        ).inc()
        metrics.HTTP_DURATION.labels(view=view).observe(elapsed)
        return response


def _view_name(request: HttpRequest) -> str:
    match = request.resolver_match
    if match is None and request.path_info.startswith("/" + settings.STATIC_URL.lstrip("/")):
        return "static"
    if match is None:
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return "unmatched"
    return match.view_name


class RequestIdMiddleware:
    """Outermost: every request gets an id (core.logs.request_id: a proxy's, when it sent a
    well-formed one in X-Request-ID, else a new one) that every log line written for it carries
    and that the answer returns in X-Request-ID, so a person reporting a problem can quote it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.id = logs.request_id(request.headers.get("X-Request-ID"))
        token = logs.start(request_id=request.id)
        try:
            response = self.get_response(request)
        finally:
            logs.end(token)
        response["X-Request-ID"] = request.id
        return response


class ProbeMiddleware:
    """The health probes, answered before the host is checked and before the redirect to HTTPS:
    a load balancer or an orchestrator calls the web server by its address, over plain HTTP.
    Neither reveals anything: /livez says the process answers, /healthz which part is down."""

    PROBES = {"/livez": views.livez, "/healthz": views.healthz}

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = self.PROBES.get(request.path_info)
        if probe is not None and request.method in ("GET", "HEAD"):
            return probe(request)
        return self.get_response(request)
