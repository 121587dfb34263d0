"""gunicorn's configuration for production, read from the environment (README.md, "Production").

    gunicorn -c python:portal.gunicorn portal.wsgi

Threads (`gthread`): a request spends most of its time waiting on PostgreSQL, Redis or Microsoft,
and each thread keeps its own database connection for the next request (CONN_MAX_AGE). The
defaults suit a machine of two cores behind a TLS-terminating proxy on the same machine.

| variable | what | default |
|---|---|---|
| GUNICORN_BIND | address:port (or unix:/path) | 127.0.0.1:8000 |
| GUNICORN_WORKERS | processes | 2 |
| GUNICORN_THREADS | threads per process | 8 |
| GUNICORN_TIMEOUT | seconds a request may hold a thread before its worker is restarted | 60 |
| GUNICORN_GRACEFUL_TIMEOUT | seconds requests get to finish on a restart or stop | 30 |
| GUNICORN_KEEPALIVE | seconds an idle connection from the proxy stays open | 5 |
| GUNICORN_MAX_REQUESTS | requests after which a worker is replaced (0: never) | 0 |
| FORWARDED_ALLOW_IPS | proxies whose X-Forwarded-* headers are believed | 127.0.0.1,::1 |

Logs go to standard error in the portal's format (LOG_FORMAT, LOG_LEVEL: core.logs), gunicorn's
own and the access log alike; the access log leaves out query strings, which can carry an
authorization code.
"""

from __future__ import annotations

from pathlib import Path

from gunicorn.glogging import Logger

from core import metrics
from core.env import load_env_file, read_int, read_str
from core.logs import FORMATS, REDACTED, redact_path
from core.logs import config as log_config

load_env_file(Path(__file__).resolve().parent.parent / ".env")

wsgi_app = "portal.wsgi"
bind = [read_str("GUNICORN_BIND", default="127.0.0.1:8000")]
worker_class = "gthread"
workers = read_int("GUNICORN_WORKERS", 2)
threads = read_int("GUNICORN_THREADS", 8)
timeout = read_int("GUNICORN_TIMEOUT", 60)
graceful_timeout = read_int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = read_int("GUNICORN_KEEPALIVE", 5)
max_requests = read_int("GUNICORN_MAX_REQUESTS", 0, minimum=0)
max_requests_jitter = max_requests // 10
forwarded_allow_ips = read_str("FORWARDED_ALLOW_IPS", default="127.0.0.1,::1")
# gunicorn's bounds on the request line's length and on the number of headers (its defaults).
limit_request_line = 8190
limit_request_fields = 100

_format = (read_str("LOG_FORMAT", default="text") or "text").lower()
if _format not in FORMATS:
    raise SystemExit(f"LOG_FORMAT: {_format!r} is not one of {', '.join(FORMATS)}")
logconfig_dict = log_config(_format, (read_str("LOG_LEVEL", default="INFO") or "INFO").upper())
errorlog = "-"
accesslog = "-"
logger_class = "portal.gunicorn.AccessLogger"
# The path without the query string (%(U)s), and the request id the portal answered with.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms id=%({x-request-id}o)s'


class AccessLogger(Logger):
    """gunicorn's logger, with the secret of a link taken out of the path it logs."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["U"] = redact_path(atoms["U"])
        for name in ("r", "{raw_uri}e"):  # the request line and the raw URI hold it as well
            if name in atoms:
                atoms[name] = REDACTED
        return atoms


# A worker died: prometheus_client's multiprocess mode tidies after it (core.metrics).
child_exit = metrics.child_exit
