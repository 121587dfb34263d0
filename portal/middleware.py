"""Requests that need Redis while it is away: 503 saying so, instead of a 500 and a traceback.

Admin actions (run now, refresh now, ...), the connect flow and the webhooks queue work through
Redis, the Celery broker (docs/architecture.md, "Processes"). When it cannot be reached, redis-py
raises ConnectionError or TimeoutError and kombu, publishing a task, OperationalError; nothing
is wrong with the request, so the person (or Microsoft, which retries) is told to try again.
"""

from __future__ import annotations

import logging

import kombu.exceptions
import redis.exceptions
from django.http import HttpRequest, HttpResponse
from django.utils.html import escape

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
