"""Start-up refuses malformed configuration, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from tests.conftest import ROOT

GOOD = {
    "ENV_FILE": os.devnull,
    "DEBUG": "false",
    "SECRET_KEY": "settings-test-" + "0123456789abcdef" * 3,
    "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "DATABASE_URL": "sqlite:////tmp/graphport-settings-test.sqlite3",
    "REDIS_URL": "redis://127.0.0.1:6399/0",
}
PROBE = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"


def start(**overrides: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in GOOD}
    env.update(GOOD)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_good_configuration_starts():
    result = start()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("DEBUG", "yes", "expected true or false"),
        ("DATABASE_URL", "mysql-ish://nowhere", "is not a database URL"),
        ("DATABASE_URL", "postgres://user@host:5432", "names no database"),
        ("FIELD_ENCRYPTION_KEYS", "not-a-fernet-key", "entry 1 is not a Fernet key"),
        ("REDIS_URL", "http://127.0.0.1:6379", "is not a URL with one of the schemes"),
        ("PORTAL_BASE_URL", "ftp://portal.example", "is not a URL with one of the schemes"),
        ("PORTAL_BASE_URL", "https://portal.example/app", "must be an origin without a path"),
        ("MICROSOFT_ALLOW_HTTP", "sometimes", "expected true or false"),
        ("EMAIL_URL", "pigeon://coop", "unknown scheme"),
        ("GRAPH_BUDGETS_JSON", '{"mailbx": {"limit": 5}}', "unknown budget 'mailbx'"),
        ("SECRET_KEY", "change-me-to-50-random-characters", "too weak (33 characters"),
        ("SECRET_KEY", "x" * 64, "64 characters, 1 distinct"),
        ("SECRET_KEY", "django-insecure-" + "abcdefghij" * 5, "too weak"),
        ("GRAPH_BUDGETS_JSON", '{"mailbox": {"limt": 5}}', "takes an object with"),
        ("GRAPH_BUDGETS_JSON", '{"mailbox": {"limit": 0}}', "a budget needs limit >= 1"),
        ("DATABASE_URL", "postgres://u@h:5432/n?conn_max_age=soon", "conn_max_age must be"),
        ("DATABASE_URL", "postgres://u@h:5432/n?conn_health_checks=maybe", "must be true or"),
    ],
)
def test_malformed_value_stops_startup_naming_the_variable(variable, value, words):
    result = start(**{variable: value})
    assert result.returncode != 0
    assert f"ImproperlyConfigured: {variable}: " in result.stderr
    assert words in result.stderr


def test_second_bad_key_is_named_by_position():
    result = start(FIELD_ENCRYPTION_KEYS=f"{Fernet.generate_key().decode()},short")
    assert "FIELD_ENCRYPTION_KEYS: entry 2 is not a Fernet key" in result.stderr


@pytest.mark.parametrize("variable", ["SECRET_KEY", "FIELD_ENCRYPTION_KEYS"])
def test_missing_secret_outside_debug_stops_startup(variable):
    result = start(**{variable: None})
    assert result.returncode != 0
    assert f"ImproperlyConfigured: {variable}: required when DEBUG is off" in result.stderr


def test_secret_can_come_from_a_file(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text(Fernet.generate_key().decode())
    result = start(FIELD_ENCRYPTION_KEYS=None, FIELD_ENCRYPTION_KEYS_FILE=str(key_file))
    assert result.returncode == 0, result.stderr


def test_production_cookies_and_headers_over_https():
    probe = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0, "
        "s.SECURE_SSL_REDIRECT, s.ALLOWED_HOSTS, s.CSRF_TRUSTED_ORIGINS)"
    )
    env = dict(os.environ, **GOOD, PORTAL_BASE_URL="https://portal.example.com")
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "True True True True ['portal.example.com'] ['https://portal.example.com']"
    )


def test_database_connections_are_kept_and_checked_unless_the_url_says_otherwise():
    probe = (
        "import django; django.setup(); from django.conf import settings as s; "
        "d = s.DATABASES['default']; print(d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS'])"
    )

    def read(url: str) -> str:
        env = dict(os.environ, **GOOD) | {"DATABASE_URL": url}
        result = subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert read("postgres://u:p@h:5432/n") == "600 True"
    assert read("postgres://u:p@h:5432/n?conn_max_age=0&conn_health_checks=false") == "0 False"
