"""Errors as RFC 9457 problem documents (`application/problem+json`).

Each error has a stable `type` (a URI under /api/v1/problems/, one slug per kind of error) that
clients branch on; `title` is its fixed summary, `detail` this occurrence in words. Input errors
name their field in `errors` ([{"field", "detail"}]), and in `detail` as well.
"""

from __future__ import annotations

import math

from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

TYPE_BASE = "/api/v1/problems/"
MEDIA_TYPE = "application/problem+json"

#: DRF's own exceptions: their slug and title
_DRF = {
    exceptions.NotAuthenticated: ("unauthorized", "Authentication required"),
    exceptions.AuthenticationFailed: ("unauthorized", "Authentication required"),
    exceptions.PermissionDenied: ("forbidden", "Not allowed"),
    exceptions.NotFound: ("not-found", "Not found"),
    exceptions.MethodNotAllowed: ("method-not-allowed", "Method not allowed"),
    exceptions.NotAcceptable: ("not-acceptable", "Not acceptable"),
    exceptions.UnsupportedMediaType: ("unsupported-media-type", "Unsupported media type"),
    exceptions.ParseError: ("malformed-body", "Malformed request body"),
    exceptions.Throttled: ("rate-limited", "Too many requests"),
    exceptions.ValidationError: ("invalid-request", "Invalid request"),
}


class Problem(exceptions.APIException):
    """An error of the API's own, with its slug."""

    def __init__(
        self,
        status_code: int,
        slug: str,
        title: str,
        detail: str,
        *,
        field: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(detail)
        self.status_code = status_code
        self.slug = slug
        self.title = title
        self.field = field
        self.retry_after = retry_after


def invalid(field: str, detail: str, slug: str = "invalid-request") -> Problem:
    """A 400 naming the field at fault."""
    return Problem(400, slug, "Invalid request", f"{field}: {detail}", field=field)


def not_found(what: str) -> Problem:
    return Problem(404, "not-found", "Not found", f"No {what} with this id.")


def document(
    status_code: int,
    slug: str,
    title: str,
    detail: str,
    instance: str = "",
    errors: list[dict[str, str]] | None = None,
) -> dict:
    body = {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status_code,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return body


def _field_errors(detail, prefix: str = "") -> list[dict[str, str]]:
    """DRF's nested validation details, flattened to (field, message) pairs."""
    if isinstance(detail, dict):
        found = []
        for name, value in detail.items():
            field = "" if name == "non_field_errors" else f"{prefix}{name}"
            found += _field_errors(value, f"{field}." if field else "")
        return found
    if isinstance(detail, list):
        found = []
        for value in detail:
            found += _field_errors(value, prefix)
        return found
    return [{"field": prefix.rstrip("."), "detail": str(detail)}]


def handle(exc, context) -> Response | None:
    """DRF's exception handler: every error the API answers is a problem document."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if not isinstance(exc, exceptions.APIException):
        return None  # a bug: Django's 500, logged as such
    request = context.get("request")
    instance = request.path if request is not None else ""
    headers = {}
    errors = None
    if isinstance(exc, Problem):
        slug, title, detail = exc.slug, exc.title, str(exc.detail)
        if exc.field:
            errors = [{"field": exc.field, "detail": detail}]
        wait = exc.retry_after
    else:
        slug, title = next(
            (v for k, v in _DRF.items() if isinstance(exc, k)), ("error", "Request failed")
        )
        if isinstance(exc, exceptions.ValidationError):
            errors = _field_errors(exc.detail)
            detail = "; ".join(
                f"{e['field']}: {e['detail']}" if e["field"] else e["detail"] for e in errors
            )
        else:
            detail = str(exc.detail)
        wait = getattr(exc, "wait", None)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        headers["WWW-Authenticate"] = 'Bearer realm="graphport"'
        exc.status_code = status.HTTP_401_UNAUTHORIZED
    if wait is not None:
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
    set_rollback()
    body = document(exc.status_code, slug, title, detail, instance, errors)
    return Response(body, status=exc.status_code, headers=headers, content_type=MEDIA_TYPE)


def unknown_endpoint(request, rest: str = "") -> JsonResponse:
    """Anything under /api/ that no endpoint answers."""
    body = document(
        404, "not-found", "Not found", f"No API endpoint at {request.path}.", request.path
    )
    return JsonResponse(body, status=404, content_type=MEDIA_TYPE)
