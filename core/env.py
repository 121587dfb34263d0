"""Strict readers for the environment.

django-environ does the reading (including ``VAR_FILE`` for secrets kept in files), but it is
lenient: ``DEBUG=yes`` reads as true and a database URL with an unknown scheme only warns. A
portal holding other companies' tokens should refuse to start on a value it cannot be sure of,
so every reader here raises ``ImproperlyConfigured`` naming the variable and what was wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

env = environ.FileAwareEnv()

_TRUE = {"true", "1"}
_FALSE = {"false", "0"}
DATABASE_SCHEMES = {"sqlite", "postgres", "postgresql", "pgsql"}
REDIS_SCHEMES = {"redis", "rediss", "unix"}
# Seconds a database connection is kept open for reuse: opening one costs PostgreSQL a process.
DATABASE_CONN_MAX_AGE = 600


def load_env_file(default: Path) -> None:
    """Variables from `ENV_FILE` (else `default`, a checkout's .env) when it exists, under those
    the environment already has: for local use; services get theirs from their environment."""
    path = Path(os.environ.get("ENV_FILE", default))
    if path.is_file():
        env.read_env(path)


def _raw(name: str) -> str | None:
    value = env.str(name, default=None)
    if value is None:
        return None
    value = value.strip()
    return value or None


def read_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}: expected true or false (or 1/0), got {value!r}")


def read_int(name: str, default: int, minimum: int = 1) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected a whole number, got {value!r}") from None
    if number < minimum:
        word = "positive" if minimum == 1 else f"at least {minimum}"
        raise ImproperlyConfigured(f"{name}: must be {word}, got {number}")
    return number


def read_json(name: str) -> dict:
    value = _raw(name)
    if value is None:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: not valid JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise ImproperlyConfigured(f"{name}: expected a JSON object")
    return parsed


def read_str(name: str, default: str | None = None) -> str | None:
    value = _raw(name)
    return default if value is None else value


def check_secret(name: str, value: str, *, length: int = 50, distinct: int = 5) -> str:
    """A secret that stands up in production: long and random-looking, not a placeholder (the
    same rule as Django's deployment check for SECRET_KEY)."""
    if len(value) < length or len(set(value)) < distinct or value.startswith("django-insecure"):
        raise ImproperlyConfigured(
            f"{name}: too weak ({len(value)} characters, {len(set(value))} distinct): use at "
            f"least {length} random characters, e.g. python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(50))'"
        )
    return value


def read_url(name: str, default: str, schemes: set[str]) -> str:
    value = _raw(name) or default
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise ImproperlyConfigured(
            f"{name}: {value!r} is not a URL with one of the schemes {allowed}"
        )
    if parts.scheme in {"http", "https"} and not parts.hostname:
        raise ImproperlyConfigured(f"{name}: {value!r} has no host name")
    return value


def read_database(name: str, default: str) -> dict:
    value = _raw(name) or default
    scheme = urlsplit(value).scheme
    if scheme not in DATABASE_SCHEMES:
        raise ImproperlyConfigured(
            f"{name}: {value!r} is not a database URL; use postgres://user:password@host:port/name "
            "or sqlite:////absolute/path.sqlite3"
        )
    config = environ.Env.db_url_config(value)
    if scheme != "sqlite" and not config.get("NAME"):
        raise ImproperlyConfigured(f"{name}: {value!r} names no database")
    # Connections are kept open between requests and tasks, and checked before they are used
    # again (docs/architecture.md, "Database connections"); the URL's query may say otherwise.
    age = config.get("CONN_MAX_AGE", DATABASE_CONN_MAX_AGE)
    if not isinstance(age, int) or isinstance(age, bool) or age < 0:
        raise ImproperlyConfigured(
            f"{name}: conn_max_age must be a number of seconds (0 closes after each request), "
            f"got {age!r}"
        )
    config["CONN_MAX_AGE"] = age
    checks = str(config.get("CONN_HEALTH_CHECKS", "true")).lower()
    if checks not in _TRUE | _FALSE:
        raise ImproperlyConfigured(
            f"{name}: conn_health_checks must be true or false, got {checks!r}"
        )
    config["CONN_HEALTH_CHECKS"] = checks in _TRUE
    return config


def read_email(name: str, default: str) -> dict:
    value = _raw(name) or default
    scheme = urlsplit(value).scheme
    if scheme not in environ.Env.EMAIL_SCHEMES:
        allowed = ", ".join(sorted(environ.Env.EMAIL_SCHEMES))
        raise ImproperlyConfigured(f"{name}: {value!r} has an unknown scheme; use one of {allowed}")
    return environ.Env.email_url_config(value)


def read_fernet_keys(name: str) -> list[str]:
    value = _raw(name)
    if value is None:
        return []
    keys = [key.strip() for key in value.split(",") if key.strip()]
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"{name}: entry {position} is not a Fernet key (32 url-safe base64-encoded bytes; "
                'make one with python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())")'
            ) from None
    return keys


def dev_secret(path: Path, make) -> str:
    """A development-only secret, generated once and kept in ``var/`` so that the web process,
    the workers and restarts agree on it."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value
