"""Microsoft's calls to the portal: change notifications and lifecycle events (docs/microsoft.md,
"Change notifications").

Thin: the validation handshake is answered before anything else (Graph waits ten seconds at
most), a notification is acknowledged with 202 once graphsync.notifications has queued its work
(Graph wants an answer within three seconds, and retries or slows down otherwise). The body is
read up to GRAPH_NOTIFICATION_MAX_BYTES. What does not check out is answered 202 as well, so a
sender learns nothing about which subscriptions exist.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from graphsync import notifications

MAX_TOKEN_LENGTH = 1024  # Graph's tokens are a sentence and a GUID


def _receive(request: HttpRequest, accept: Callable[[list[dict]], object]) -> HttpResponse:
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
    accept(items)
    return HttpResponse(status=202)


@csrf_exempt
@require_POST
def changes(request: HttpRequest) -> HttpResponse:
    return _receive(request, notifications.receive_changes)


@csrf_exempt
@require_POST
def lifecycle(request: HttpRequest) -> HttpResponse:
    return _receive(request, notifications.receive_lifecycle)
