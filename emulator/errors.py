"""Error bodies in Microsoft's exact shapes: identity (AADSTS) and Graph (OData)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any


class AadError(Exception):
    """An identity-platform error: `error` + AADSTS code, rendered as Microsoft renders it."""

    def __init__(
        self,
        error: str,
        code: int,
        message: str,
        status: int = 400,
        suberror: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.error = error
        self.code = code
        self.message = message
        self.status = status
        self.suberror = suberror
        self.headers = headers or {}

    def description(self, trace_id: str, correlation_id: str, stamp: str) -> str:
        return (
            f"AADSTS{self.code}: {self.message} Trace ID: {trace_id} "
            f"Correlation ID: {correlation_id} Timestamp: {stamp}"
        )

    def body(self, correlation_id: str | None = None) -> dict[str, Any]:
        trace_id = str(uuid.uuid4())
        correlation_id = correlation_id or str(uuid.uuid4())
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body: dict[str, Any] = {
            "error": self.error,
            "error_description": self.description(trace_id, correlation_id, stamp),
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }
        if self.suberror:
            body["suberror"] = self.suberror
        return body

    def redirect_params(self) -> dict[str, str]:
        """What goes back to the redirect URI on an authorize error (no JSON there)."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return {
            "error": self.error,
            "error_description": self.description(str(uuid.uuid4()), str(uuid.uuid4()), stamp),
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }


class GraphError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        inner: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.inner = inner or {}

    def body(self, request_id: str, client_request_id: str | None) -> dict[str, Any]:
        inner: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            "request-id": request_id,
            "client-request-id": client_request_id or request_id,
        }
        inner.update(self.inner)
        return {"error": {"code": self.code, "message": self.message, "innerError": inner}}


def token_expired() -> GraphError:
    return GraphError(
        401,
        "InvalidAuthenticationToken",
        "Access token has expired or is not yet valid.",
        {"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'},
    )


def not_found(what: str = "item") -> GraphError:
    return GraphError(
        404, "itemNotFound", f"The specified object was not found in the store. ({what})"
    )


def access_denied() -> GraphError:
    return GraphError(
        403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
    )


def blocked_by_access_policy() -> GraphError:
    """An app-only call to a mailbox an Exchange application access policy (or RBAC for
    Applications) closes to the app."""
    return GraphError(
        403,
        "ErrorAccessDenied",
        "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly "
        "AccessPolicy settings.",
    )


def directory_denied() -> GraphError:
    return GraphError(
        403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
    )


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)
