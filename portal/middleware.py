"""Requests that need Redis while it is away: 503 saying so, instead of a 500 and a traceback.

Admin actions (run now, refresh now, ...), the connect flow and the webhooks queue work through
Redis, the Celery broker (docs/architecture.md, "Processes"). When it cannot be reached, redis-py
raises ConnectionError or TimeoutError and kombu, publishing a task, OperationalError; nothing
is wrong with the request, so the person (or Microsoft, which retries) is told to try again.
"""

from __future__ import annotations

import logging
import time

import kombu.exceptions
import redis.exceptions
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.utils.html import escape

from core import metrics

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
    if match is None:
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return "unmatched"
    return match.view_name
