"""Graphport settings, read from the environment (and a ``.env`` file for local use).

Every variable is documented in the README's configuration table and in ``.env.example``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from datetime import timedelta
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urlsplit

from celery.schedules import crontab
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from core.env import (
    REDIS_SCHEMES,
    check_secret,
    dev_secret,
    load_env_file,
    read_bool,
    read_database,
    read_email,
    read_fernet_keys,
    read_int,
    read_json,
    read_str,
    read_url,
)
from core.logs import FORMATS
from core.logs import config as log_config

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

# ENV_FILE lets tests and containers point elsewhere (or at an empty file).
load_env_file(BASE_DIR / ".env")

DEBUG = read_bool("DEBUG", default=False)

SECRET_KEY = read_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY: required when DEBUG is off (or set SECRET_KEY_FILE)"
        )
    SECRET_KEY = dev_secret(VAR_DIR / "dev-secret-key", lambda: secrets.token_urlsafe(50))
elif not DEBUG:
    check_secret("SECRET_KEY", SECRET_KEY)

FIELD_ENCRYPTION_KEYS = read_fernet_keys("FIELD_ENCRYPTION_KEYS")
if not FIELD_ENCRYPTION_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS: required when DEBUG is off (comma-separated Fernet keys, "
            "newest first; or set FIELD_ENCRYPTION_KEYS_FILE)"
        )
    FIELD_ENCRYPTION_KEYS = [
        dev_secret(VAR_DIR / "dev-field-key", lambda: Fernet.generate_key().decode())
    ]

PORTAL_BASE_URL = read_url(
    "PORTAL_BASE_URL", default="http://127.0.0.1:8000", schemes={"http", "https"}
).rstrip("/")
_base = urlsplit(PORTAL_BASE_URL)
if _base.path not in ("", "/"):
    raise ImproperlyConfigured(
        f"PORTAL_BASE_URL: {PORTAL_BASE_URL!r} must be an origin without a path"
    )
PORTAL_ORIGIN = f"{_base.scheme}://{_base.netloc}"

_hosts = read_str("ALLOWED_HOSTS")
ALLOWED_HOSTS = [h.strip() for h in _hosts.split(",") if h.strip()] if _hosts else [_base.hostname]
if DEBUG and not _hosts:
    ALLOWED_HOSTS += ["localhost", "127.0.0.1", "[::1]"]
_origins = read_str("CSRF_TRUSTED_ORIGINS")
CSRF_TRUSTED_ORIGINS = (
    [o.strip() for o in _origins.split(",") if o.strip()] if _origins else [PORTAL_ORIGIN]
)

MICROSOFT_ALLOW_HTTP = read_bool("MICROSOFT_ALLOW_HTTP", default=False)
# Allow custom login and Graph URLs on internal addresses (loopback, private, link-local, and
# names resolving to them): for a local emulator only. Without it core.outbound refuses them when
# an app is saved and again before every request.
MICROSOFT_ALLOW_INTERNAL_HOSTS = read_bool("MICROSOFT_ALLOW_INTERNAL_HOSTS", default=False)
# Seconds to wait for Microsoft's identity platform and Graph before calling it unreachable.
MICROSOFT_HTTP_TIMEOUT = 20

REDIS_URL = read_url("REDIS_URL", default="redis://127.0.0.1:6379/0", schemes=REDIS_SCHEMES)

DATABASES = {"default": read_database("DATABASE_URL", default=f"sqlite:///{BASE_DIR}/db.sqlite3")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the Celery workers write to the same file: wait for each other's
    # locks instead of failing, and take the write lock at BEGIN to avoid upgrade deadlocks.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    )

_email = read_email("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST", "")
EMAIL_PORT = _email.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _email.get("EMAIL_USE_SSL", False)
if "EMAIL_FILE_PATH" in _email:
    EMAIL_FILE_PATH = _email["EMAIL_FILE_PATH"]
DEFAULT_FROM_EMAIL = read_str("DEFAULT_FROM_EMAIL", default="Graphport <graphport@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# How long authorization attempts and audit events are kept (connections.retention); 0 keeps
# them forever.
RETENTION_AUTHORIZATION_ATTEMPTS_DAYS = read_int(
    "RETENTION_AUTHORIZATION_ATTEMPTS_DAYS", 90, minimum=0
)
RETENTION_AUDIT_EVENTS_DAYS = read_int("RETENTION_AUDIT_EVENTS_DAYS", 365, minimum=0)

# --- outgoing webhooks (connections.webhooks) -------------------------------------------------

_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?", re.I)


def _webhook_hosts(name: str) -> list[str]:
    """Comma-separated host names or IP addresses, nothing else: a scheme, a port or a path
    would never match a receiver's host, and the operator would wonder why."""
    hosts = [h.strip() for h in (read_str(name) or "").split(",") if h.strip()]
    for host in hosts:
        try:
            ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
        except ValueError:
            if not _HOST_NAME.fullmatch(host):
                raise ImproperlyConfigured(
                    f"{name}: {host!r} is not a host name or an IP address (list hosts "
                    "separated by commas, without a scheme, port or path)"
                ) from None
    return hosts


# Webhook receivers on internal addresses (loopback, private, link-local, and names resolving
# to them) are refused when an endpoint is saved and before every request, unless their host is
# listed here; MICROSOFT_ALLOW_INTERNAL_HOSTS does not lift this rule.
WEBHOOK_ALLOWED_HOSTS = _webhook_hosts("WEBHOOK_ALLOWED_HOSTS")
# An endpoint whose every attempt has failed for this many days is disabled and its tenant's
# administrators are told.
WEBHOOK_DISABLE_AFTER_DAYS = read_int("WEBHOOK_DISABLE_AFTER_DAYS", 5)
# How long a delivery task holds an endpoint and the deliveries it claimed: a dead worker's are
# sent again soon after. At least as long as a batch can take (5 s of sending, then one request
# of up to 3 + 10 s), so a live worker never loses them mid-batch.
WEBHOOK_LEASE_SECONDS = read_int("WEBHOOK_LEASE_SECONDS", 60, minimum=20)
# A delivery task is queued when the transaction that raised an event commits (tests that
# deliver nothing turn this off; beat's sweep would still find the deliveries).
WEBHOOK_DELIVER_ON_COMMIT = True

# --- the customer API (portal.api) ----------------------------------------------------------

API_RATE_LIMIT_PER_MINUTE = read_int("API_RATE_LIMIT_PER_MINUTE", 1200, minimum=1)
# A proxied Graph call waits at most this long for the shared throttle budgets (and Graph's own
# Retry-After) before answering 429: a web process is never held longer.
API_PROXY_MAX_WAIT_SECONDS = read_int("API_PROXY_MAX_WAIT_SECONDS", 3, minimum=0)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["portal.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["portal.api.auth.HasKey"],
    "DEFAULT_THROTTLE_CLASSES": ["portal.api.auth.PerKeyRate"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "portal.api.problems.handle",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Graphport API",
    "DESCRIPTION": "Connections, connect sessions, sync jobs, the records changes feed and a "
    "Microsoft Graph proxy for a tenant's own backend. Authenticate with "
    "`Authorization: Bearer <API key>`.",
    "VERSION": "1.0.0",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- metrics for Prometheus (core.metrics, portal.metrics) ----------------------------------

# The bearer token /metrics asks for; unset, /metrics answers 404 (metrics off).
METRICS_TOKEN = read_str("METRICS_TOKEN") or ""
if METRICS_TOKEN:
    check_secret("METRICS_TOKEN", METRICS_TOKEN, length=32)
# Where every process writes its metrics for a scrape to sum; emptied once before the web server
# and the workers start together (README, "Metrics").
# prometheus_client reads the variable itself when first imported, which in gunicorn's master
# is before these settings: it belongs in the service's environment, not in a .env file.
PROMETHEUS_MULTIPROC_DIR = read_str("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR and not (
    os.path.isdir(PROMETHEUS_MULTIPROC_DIR) and os.access(PROMETHEUS_MULTIPROC_DIR, os.W_OK)
):
    raise ImproperlyConfigured(
        f"PROMETHEUS_MULTIPROC_DIR: {PROMETHEUS_MULTIPROC_DIR!r} is not a directory this "
        "process can write to"
    )

INSTALLED_APPS = [
    "portal.apps.PortalAdminConfig",  # django.contrib.admin with portal.admin's site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the interactive docs' own assets: no CDN
    # Staff's second factor (portal.twofactor): authenticator apps, recovery codes, passkeys.
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "django_otp_webauthn",
    "portal",
    "connections",
    "graphsync",
]
# Development commands (`manage.py runportal`), from a checkout only: not in the product's wheel.
if DEBUG and find_spec("devtools"):
    INSTALLED_APPS.append("devtools")

MIDDLEWARE = [
    # Outermost: every log line of a request carries its id, every answer returns it.
    "portal.middleware.RequestIdMiddleware",
    # Then what times and counts every answer, the other middleware's own included.
    "portal.middleware.RequestMetricsMiddleware",
    # The health probes, before the host check and the redirect to HTTPS.
    "portal.middleware.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (compressed, and cached for ever under hashed names), before sessions.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "portal.twofactor.TwoFactorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Innermost, so it sees what the views raise: Redis away answers 503 saying so.
    "portal.middleware.RedisUnavailableMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "connections.signin_views.offered",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static files, served by WhiteNoise. With STATIC_MANIFEST (the default outside DEBUG) pages
# link them under hashed names from the manifest `collectstatic` writes, compressed and cached
# by browsers for ever: run `collectstatic` on every release, before the web server starts.
STATIC_URL = "static/"
STATIC_ROOT = Path(read_str("STATIC_ROOT") or VAR_DIR / "static")
STATIC_MANIFEST = read_bool("STATIC_MANIFEST", default=not DEBUG)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Without the manifest (development, tests) WhiteNoise finds each file in its app when asked.
WHITENOISE_USE_FINDERS = WHITENOISE_AUTOREFRESH = not STATIC_MANIFEST
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SILENCED_SYSTEM_CHECKS: list[str] = []

# Security headers and cookies. Outside DEBUG the cookies are HTTPS-only when the portal is
# served over HTTPS, and HSTS is on; behind a TLS-terminating proxy set USE_X_FORWARDED_PROTO.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
if read_bool("USE_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if not DEBUG and _base.scheme == "https":
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = 60 * 60 * 24 * 365
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    # Asks to be on browsers' preload list (a site submits itself at hstspreload.org); off
    # for a domain whose other hosts cannot all serve HTTPS.
    SECURE_HSTS_PRELOAD = read_bool("HSTS_PRELOAD", default=True)
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS.append("security.W021")  # the operator chose so

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"

# --- signing in (connections.signin, portal.twofactor) -------------------------------------------

# Sign in with Microsoft through a platform-level app the operator registers in Azure (multi-
# tenant: "Accounts in any organizational directory"); unset, only tenants that chose their own
# app offer it (README, "Sign in with Microsoft").
SIGNIN_CLIENT_ID = (read_str("SIGNIN_CLIENT_ID") or "").lower()
if SIGNIN_CLIENT_ID and not re.fullmatch(
    r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", SIGNIN_CLIENT_ID
):
    raise ImproperlyConfigured(
        f"SIGNIN_CLIENT_ID: {SIGNIN_CLIENT_ID!r} is not an Application (client) ID (a GUID)"
    )
SIGNIN_CLIENT_SECRET = read_str("SIGNIN_CLIENT_SECRET") or ""
if SIGNIN_CLIENT_ID and not SIGNIN_CLIENT_SECRET:
    raise ImproperlyConfigured(
        "SIGNIN_CLIENT_SECRET: required with SIGNIN_CLIENT_ID (or set SIGNIN_CLIENT_SECRET_FILE)"
    )
SIGNIN_AUTHORITY = read_str("SIGNIN_AUTHORITY", default="organizations")
SIGNIN_LOGIN_URL = read_url(
    "SIGNIN_LOGIN_URL", default="https://login.microsoftonline.com", schemes={"http", "https"}
).rstrip("/")
# Operators (superusers) must use a second factor; a tenant turns it on for its administrators.
TWO_FACTOR_FOR_OPERATORS = read_bool("TWO_FACTOR_FOR_OPERATORS", default=True)
OTP_TOTP_ISSUER = "Graphport"
# Passkeys are a second factor here, never a way in by themselves; they belong to the host of
# PORTAL_BASE_URL, read when used (portal.twofactor.PasskeyHelper).
OTP_WEBAUTHN_ALLOW_PASSWORDLESS_LOGIN = False
OTP_WEBAUTHN_RP_NAME = "Graphport"
OTP_WEBAUTHN_RP_ID_CALLABLE = "portal.twofactor.relying_party_id"
OTP_WEBAUTHN_HELPER_CLASS = "portal.twofactor.PasskeyHelper"
OTP_WEBAUTHN_ALLOWED_ORIGINS = [PORTAL_ORIGIN]
if not (PORTAL_ORIGIN.startswith("https://") or _base.hostname == "localhost"):
    # Browsers offer passkeys on https:// and localhost only; on any other origin (such as
    # http://127.0.0.1 in development) the pages offer authenticator apps alone, and the
    # package's check that the origin is secure has nothing to protect.
    SILENCED_SYSTEM_CHECKS.append("otp_webauthn.E031")
# An invitation link works this many days, once.
INVITATION_VALID_DAYS = read_int("INVITATION_VALID_DAYS", 7)
# Failed password sign-ins allowed per account and per address in LOGIN_WINDOW_SECONDS.
LOGIN_FAILURES_PER_ACCOUNT = read_int("LOGIN_FAILURES_PER_ACCOUNT", 10)
LOGIN_FAILURES_PER_ADDRESS = read_int("LOGIN_FAILURES_PER_ADDRESS", 50)
LOGIN_WINDOW_SECONDS = read_int("LOGIN_WINDOW_SECONDS", 900, minimum=60)
# Password reset requests allowed per address and per e-mail address in an hour.
PASSWORD_RESETS_PER_ADDRESS = read_int("PASSWORD_RESETS_PER_ADDRESS", 5)
PASSWORD_RESETS_PER_EMAIL = read_int("PASSWORD_RESETS_PER_EMAIL", 3)
PASSWORD_RESET_WINDOW_SECONDS = 3600

# Logs on standard error (core.logs): `json` writes one object per line for a log system, with
# the request id, the Celery task and the tenant and connection where known; `text` is for people.
LOG_FORMAT = read_str("LOG_FORMAT", default="text").lower()
if LOG_FORMAT not in FORMATS:
    raise ImproperlyConfigured(f"LOG_FORMAT: {LOG_FORMAT!r} is not one of {', '.join(FORMATS)}")
LOG_LEVEL = read_str("LOG_LEVEL", default="INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(
        f"LOG_LEVEL: {LOG_LEVEL!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    )
LOGGING = log_config(LOG_FORMAT, LOG_LEVEL)

# Microsoft Graph: Graphport spends Microsoft's own limits before sending (graphsync.budgets,
# docs/microsoft.md "Throttling limits and budgets"). Tests and benchmarks narrow some of them to
# bind against the emulator's limits, e.g. {"mailbox": {"limit": 5, "window": 15}}; the graphsync
# app checks them at start-up.
GRAPH_BUDGETS = read_json("GRAPH_BUDGETS_JSON")
# A throttled request sleeps at most this long in a worker; a longer wait ends the task and
# re-enqueues it with a countdown.
GRAPH_MAX_SLEEP_SECONDS = 3.0
# The lease a sync run holds on its job: renewed with every page and, between pages, by the
# run's heartbeat every third of it (graphsync.engine), so a slow page or a throttle wait never
# loses it, and a dead worker's job is taken over within about this long (docs/architecture.md,
# "Sync").
GRAPH_JOB_LEASE_SECONDS = read_int("GRAPH_JOB_LEASE_SECONDS", default=30)
GRAPH_MAIL_FOLDERS = ("inbox", "sentitems")
# Change notifications (graphsync.subscriptions). Beat renews a subscription once it expires
# within the margin: a day, so a beat outage or a failing renewal has many ticks to recover in
# before a seven-day Outlook subscription lapses.
GRAPH_SUBSCRIPTION_RENEW_MARGIN_SECONDS = 24 * 3600
# With a working subscription a job still polls, this rarely, in case a notification was lost.
GRAPH_SAFETY_POLL_SECONDS = 6 * 3600
# Notifications for one job within this window start one run (Graph sends them in bursts).
GRAPH_NOTIFICATION_DELAY_SECONDS = 1.0
# The largest notification body accepted; Graph's batches are far smaller.
GRAPH_NOTIFICATION_MAX_BYTES = 1024 * 1024
# Requests to the webhooks per sending address in 10 seconds (graphsync.webhooks).
GRAPH_NOTIFICATION_BUDGET = read_int("GRAPH_NOTIFICATION_BUDGET", 3000)
# A new connection's jobs are enqueued at once (tests that do not sync turn this off).
GRAPHSYNC_START_ON_CONNECT = True

# Celery: three queues so a backlog of syncs never delays token refreshes, and a fourth,
# `webhooks`, so a slow receiver never delays either. Tasks are
# acknowledged after they finish and handed to another worker when the one running them dies,
# so every task must be safe to run twice (they take claims and leases: docs/architecture.md,
# "Claims and leases, never Python locks").
CELERY_BROKER_URL = REDIS_URL
# kombu's Redis transport, repaired so that a worker rides out a Redis restart (portal.celery).
CELERY_BROKER_TRANSPORT = "portal.celery:BrokerTransport"
if urlsplit(REDIS_URL).scheme == "rediss":
    # Named by setting rather than by the URL's scheme, the transport gets no TLS of its own
    # accord: check the certificate, as Graphport's own Redis client (core.redis_client) does.
    CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": "required"}
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_RESULT_EXPIRES = timedelta(hours=1)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# `bulk` takes first loads (graphsync.dispatch), so an organisation's onboarding never sits in
# front of another tenant's incremental runs on `sync`.
CELERY_TASK_QUEUES = (
    Queue("tokens"),
    Queue("sync"),
    Queue("bulk"),
    Queue("default"),
    Queue("webhooks"),
)
CELERY_TASK_ROUTES = {
    # Named in full: Celery looks up a task's own name before the patterns below.
    "connections.tasks.deliver_webhooks": {"queue": "webhooks"},
    "connections.tasks.sweep_webhooks": {"queue": "webhooks"},
    "connections.tasks.*": {"queue": "tokens"},
    "graphsync.tasks.*": {"queue": "sync"},
}
# A task not acknowledged within this time is redelivered: longer than any task may run or wait
# for its countdown, or it would run twice. A sync job held by a dead worker does not wait for it:
# dispatch finds the job once its lease has run out (graphsync.dispatch).
# Socket timeouts: a broker that vanished without closing the connection (a failover, a firewall)
# is noticed instead of waited on for ever.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 60 * 60,
    "socket_connect_timeout": 5,
    "socket_timeout": 30,
}
# Database connections outlive tasks (portal.celery): Celery's Django fixup would close them
# around every task, costing PostgreSQL a new process each time; with this it does so only every
# this many tasks.
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_TIME_LIMIT = 30 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 25 * 60
# Workers and beat ride out a broker outage however long it lasts, reconnecting by themselves
# (Celery's default gives up after 100 attempts, about 45 minutes, and the process exits).
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# On a lost broker connection a running task carries on rather than being killed: its work is
# held by claims and leases, and finishing it beats redoing it. Its message may come back after
# the visibility timeout: a repeat, which every task is safe to be.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "dispatch-token-refreshes": {
        "task": "connections.tasks.dispatch_token_refreshes",
        "schedule": timedelta(minutes=1),
    },
    "warn-expiring-secrets": {
        "task": "connections.tasks.warn_expiring_secrets",
        "schedule": crontab(hour=7, minute=0),
        "options": {"queue": "default"},
    },
    "purge-history": {
        "task": "connections.tasks.purge_history",
        "schedule": crontab(hour=3, minute=30),
        "options": {"queue": "default"},
    },
    # Often enough that a job whose worker died is found within seconds of its lease running
    # out (graphsync.dispatch); a tick with nothing due is one indexed query.
    "dispatch-due-syncs": {
        "task": "graphsync.tasks.dispatch_due_syncs",
        "schedule": timedelta(seconds=10),
    },
    "renew-subscriptions": {
        "task": "graphsync.tasks.renew_subscriptions",
        "schedule": timedelta(minutes=15),
    },
    # Finds deliveries whose task was lost, whose worker died (lease over) or whose retry is due
    # (connections.webhooks.sweep): one indexed probe per enabled endpoint.
    "sweep-webhooks": {
        "task": "connections.tasks.sweep_webhooks",
        "schedule": timedelta(seconds=10),
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
