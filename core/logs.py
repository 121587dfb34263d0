"""Log lines a log system can parse (README.md, "Logs").

`LOG_FORMAT=json` writes one JSON object per line: time, level, logger, message, and what is
known of where it came from: the request's id (`request_id`, also sent back as `X-Request-ID`),
the Celery task's id and name, the tenant and the connection. `text`, the default, is for people
reading a terminal.

Where a line came from is kept in a context variable, set at the edges: a request
(portal.middleware.RequestIdMiddleware), a task (portal.celery), and where the work names its
tenant and connection (`bind`). Each edge starts from an empty context, so nothing carries over
from one request or task to the next one a thread or process runs. A call may also pass the
same names in `extra=`.

Nothing here decides what is safe to log: code logs ids, statuses and Microsoft's error codes,
never a token, a secret or an authorization code (tests/portal/test_logs.py runs a connect, a
sync and a refresh and looks for each in every line).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid
from collections.abc import Iterator
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

#: What a line may say about where it came from, in this order.
FIELDS = ("request_id", "task_id", "task_name", "tenant_id", "connection_id")

_context: ContextVar[dict[str, Any]] = ContextVar("graphport_log_context", default={})  # noqa: B039

#: A request id a proxy in front sent (nginx's $request_id, a load balancer's trace id) is kept
#: when it looks like one; anything else is replaced, so a client cannot write into the logs.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")


#: Links that carry their secret in the path (a connect session's, an invitation's, a password
#: reset's, an organisation's sign-in link): a log shows the route, never the secret.
_SECRET_IN_PATH = re.compile(
    r"^(/connections/session/|/accounts/invitations/|/accounts/microsoft/|/accounts/reset/[^/]+/)"
    r"[^/?]+"
)
REDACTED = "[redacted]"


def redact_path(path: str) -> str:
    return _SECRET_IN_PATH.sub(rf"\1{REDACTED}", path)


def request_id(sent: str | None) -> str:
    return sent if sent and _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex


def start(**fields: Any) -> Token:
    """A fresh context for a request or a task; give the token back to `end`."""
    return _context.set({k: v for k, v in fields.items() if v is not None})


def end(token: Token) -> None:
    _context.reset(token)


def bind(**fields: Any) -> None:
    """Add to the current request's or task's context (tenant_id, connection_id) until it ends.
    Outside a request or a task (a shell, a command) it does nothing: there is no end to undo
    it at, and later lines would name what they are not about. Use `bound` there."""
    known = _context.get()
    if "request_id" in known or "task_id" in known:
        _context.set({**known, **{k: v for k, v in fields.items() if v is not None}})


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """`bind` for the length of a block."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current() -> dict[str, Any]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Puts the context's fields on every record its handler writes (a value given in `extra=`
    wins), and takes the secret out of a path among its arguments (Django's "Not Found: /…")."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        if isinstance(record.args, tuple) and any(
            isinstance(arg, str) and arg.startswith("/") for arg in record.args
        ):
            record.args = tuple(
                redact_path(arg) if isinstance(arg, str) and arg.startswith("/") else arg
                for arg in record.args
            )
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback is a field, its newlines escaped."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            entry.update(_access(record.args))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _access(atoms: dict) -> dict[str, Any]:
    """The fields of gunicorn's access line (its atoms: portal.gunicorn's access_log_format):
    the path without its query string, which can carry an authorization code."""
    fields = {
        "method": atoms.get("m"),
        "path": atoms.get("U"),
        "status": _number(atoms.get("s")),
        "bytes": _number(atoms.get("B")),
        "duration_ms": _number(atoms.get("M")),
        "remote_addr": atoms.get("h"),
    }
    sent = atoms.get("{x-request-id}o")
    if sent and sent != "-":
        fields["request_id"] = sent
    return {k: v for k, v in fields.items() if v not in (None, "-")}


def _number(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")


def config(log_format: str, level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the format and the root level: Django's LOGGING, and
    gunicorn's logconfig_dict (portal.gunicorn), so both write the same lines."""
    formatter = {"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"default": formatter},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["context"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # gunicorn's own loggers write through the root's handler, not handlers of their own.
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
        },
    }
