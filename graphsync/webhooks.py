"""Microsoft's calls to the portal: change notifications and lifecycle events (docs/microsoft.md,
"Change notifications").

Thin: the validation handshake is answered before anything else (Graph waits ten seconds at
most), a notification is acknowledged with 202 once graphsync.notifications has queued its work
(Graph wants an answer within three seconds, and retries or slows down otherwise). The body is
read up to GRAPH_NOTIFICATION_MAX_BYTES and may hold notifications.MAX_ITEMS. What does not check
out is answered 202 as well, so a sender learns nothing about which subscriptions exist.

The URLs are public, so each sending address has two budgets, counted in Redis so that all web
processes share them: requests (GRAPH_NOTIFICATION_BUDGET per window, generous: a large fleet of
subscriptions is a lot of traffic from few Microsoft addresses), and notifications that did not
check out (JUNK_BUDGET: Graph sends those only for a subscription just deleted, so an address
sending many is guessing). Past either, the answer is 429 with Retry-After (Graph retries a
delivery that failed for up to four hours).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core import keys, ratelimit
from graphsync import notifications

logger = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 1024  # Graph's tokens are a sentence and a GUID
# The window of both budgets, both webhooks together.
BUDGET_WINDOW_SECONDS = 10
# Dropped notifications per sending address and window.
JUNK_BUDGET = 1000


def over_budget(address: str) -> float | None:
    """Count a request from `address`; the seconds until its window ends when it is over either
    budget, else None (also without Redis: core.ratelimit)."""
    requests = ratelimit.over_budget(
        keys.webhook_budget(address),
        settings.GRAPH_NOTIFICATION_BUDGET,
        BUDGET_WINDOW_SECONDS,
    )
    if requests is not None:
        return requests
    return ratelimit.over_budget(
        keys.webhook_junk(address), JUNK_BUDGET, BUDGET_WINDOW_SECONDS, cost=0
    )


def count_junk(address: str, dropped: int) -> None:
    if dropped:
        ratelimit.over_budget(
            keys.webhook_junk(address), JUNK_BUDGET, BUDGET_WINDOW_SECONDS, cost=dropped
        )


def _too_many(retry_in: float) -> HttpResponse:
    response = HttpResponse("Too many requests.", status=429, content_type="text/plain")
    response["Retry-After"] = str(max(math.ceil(retry_in), 1))
    return response


def _receive(
    request: HttpRequest, accept: Callable[[list[dict]], notifications.Delivery]
) -> HttpResponse:
    address = ratelimit.sender(request)
    retry_in = over_budget(address)
    if retry_in is not None:
        # No log line per refused request: a flood would write one each.
        return _too_many(retry_in)
    token = request.GET.get("validationToken")
    if token is not None:
        if len(token) > MAX_TOKEN_LENGTH:
            return HttpResponseBadRequest("validationToken too long", content_type="text/plain")
        # Django has decoded the query string: the body is the token itself, as Graph wants.
        return HttpResponse(token, content_type="text/plain; charset=utf-8")
    limit = settings.GRAPH_NOTIFICATION_MAX_BYTES
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit() or int(declared) > limit:
        return HttpResponse("Request body too large.", status=413, content_type="text/plain")
    body = request.read(limit + 1)
    if len(body) > limit:
        return HttpResponse("Request body too large.", status=413, content_type="text/plain")
    items = notifications.parse(body)
    if items is None:
        return HttpResponseBadRequest("Expected a JSON notification.", content_type="text/plain")
    if len(items) > notifications.MAX_ITEMS:
        logger.warning(
            "%d notifications in one request from %s refused (at most %d)",
            len(items),
            address,
            notifications.MAX_ITEMS,
        )
        return HttpResponse(
            f"Too many notifications in one request (at most {notifications.MAX_ITEMS}).",
            status=413,
            content_type="text/plain",
        )
    count_junk(address, accept(items).dropped)
    return HttpResponse(status=202)


@csrf_exempt
@require_POST
def changes(request: HttpRequest) -> HttpResponse:
    return _receive(request, notifications.receive_changes)


@csrf_exempt
@require_POST
def lifecycle(request: HttpRequest) -> HttpResponse:
    return _receive(request, notifications.receive_lifecycle)
