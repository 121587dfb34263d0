"""Production as deploy/ sets it up: gunicorn from portal.gunicorn with DEBUG off, an https base
URL behind a proxy, static files collected, JSON logs and metrics summed across its processes;
and `check --deploy` silent with deploy/graphport.env filled in."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from devtools.localservices import free_port, wait_for_port
from tests.conftest import ROOT, database_url_for_subprocesses

HOST = "graphport.test"
METRICS_TOKEN = "production-test-metrics-" + "0123456789abcdef" * 2
# What an operator's shell has: the test run's own variables (DEBUG, keys, ...) must not leak in.
KEPT = ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV")


def production_env(**variables: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k in KEPT},
        "ENV_FILE": os.devnull,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "PYTHONUNBUFFERED": "1",
        **variables,
    }


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, celery_worker, tmp_path_factory):
    """gunicorn with two processes on a loopback port, on the test database and Redis."""
    work = tmp_path_factory.mktemp("production")
    (work / "metrics").mkdir()
    port = free_port()
    env = production_env(
        DEBUG="false",
        SECRET_KEY="production-test-" + "0123456789abcdef" * 3,
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        DATABASE_URL=database_url_for_subprocesses(),
        REDIS_URL=settings.REDIS_URL,
        PORTAL_BASE_URL=f"https://{HOST}",
        USE_X_FORWARDED_PROTO="true",
        LOG_FORMAT="json",
        METRICS_TOKEN=METRICS_TOKEN,
        PROMETHEUS_MULTIPROC_DIR=str(work / "metrics"),
        STATIC_ROOT=str(work / "static"),
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="2",
        GUNICORN_THREADS="4",
    )
    collect = [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"]
    subprocess.run(collect, cwd=ROOT, env=env, check=True, timeout=300)
    log = work / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:portal.gunicorn"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, process, "gunicorn", timeout=60)
        yield type(
            "Server", (), {"url": f"http://127.0.0.1:{port}", "log": log, "static": work / "static"}
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def get(server, path: str, proxied: bool = True, **headers) -> requests.Response:
    """As the TLS-terminating proxy passes a request on (or, `proxied=False`, as someone
    reaching gunicorn directly over plain HTTP)."""
    headers.setdefault("Host", HOST)
    if proxied:
        headers["X-Forwarded-Proto"] = "https"
    return requests.get(server.url + path, headers=headers, allow_redirects=False, timeout=10)


def test_static_files_are_hashed_compressed_and_cached_for_ever(server):
    manifest = json.loads((server.static / "staticfiles.json").read_text())["paths"]
    hashed = manifest["admin/css/base.css"]
    assert hashed != "admin/css/base.css"

    response = get(server, f"/static/{hashed}", **{"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "gzip"
    cache = response.headers["Cache-Control"]
    assert "immutable" in cache and int(re.search(r"max-age=(\d+)", cache)[1]) >= 365 * 86400

    page = get(server, "/admin/login/")
    assert f"/static/{hashed}" in page.text  # pages link the hashed name


def test_pages_carry_the_security_headers_and_secure_cookies(server):
    response = get(server, "/accounts/login/")
    assert response.status_code == 200
    headers = response.headers
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    cookie = headers["Set-Cookie"]
    assert "csrftoken=" in cookie and "Secure" in cookie and "HttpOnly" in cookie


def test_plain_http_without_the_proxy_header_redirects_to_https(server):
    response = get(server, "/accounts/login/?next=/", proxied=False)
    assert response.status_code == 301
    assert response.headers["Location"] == f"https://{HOST}/accounts/login/?next=/"


def test_probes_answer_by_address_over_plain_http(server):
    live = get(server, "/livez", proxied=False, Host=server.url.removeprefix("http://"))
    assert (live.status_code, live.text) == (200, "ok")
    ready = get(server, "/healthz", proxied=False, Host=server.url.removeprefix("http://"))
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ok"


def test_metrics_need_the_token_and_sum_both_processes(server):
    assert get(server, "/metrics").status_code == 401
    wrong = get(server, "/metrics", Authorization="Bearer " + "x" * len(METRICS_TOKEN))
    assert wrong.status_code == 401

    for _ in range(20):  # spread over both processes
        get(server, "/accounts/login/")
    response = get(server, "/metrics", Authorization=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    login = frozenset({"view": "login", "method": "GET", "status": "2xx"}.items())
    assert samples[("graphport_http_requests_total", login)] >= 20
    assert len(list((server.static.parent / "metrics").glob("counter_*.db"))) == 2
    assert samples[("graphport_metrics_source_up", frozenset({"source": "redis"}.items()))] == 1


def test_every_log_line_is_json_and_access_lines_name_the_request(server):
    response = get(server, "/accounts/login/?code=do-not-log-me")
    request_id = response.headers["X-Request-ID"]
    get(server, "/connections/session/gps_not-a-real-session-token/")

    lines = server.log.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line parses
    assert any(e["message"].startswith("Listening at: ") for e in entries)  # gunicorn's own
    access = [e for e in entries if e["logger"] == "gunicorn.access"]
    mine = next(e for e in access if e.get("request_id") == request_id)
    assert (mine["method"], mine["path"], mine["status"]) == ("GET", "/accounts/login/", 200)
    text = server.log.read_text()
    assert "do-not-log-me" not in text
    assert "not-a-real-session-token" not in text
    assert "/connections/session/[redacted]/" in text


def filled_template(tmp_path: Path) -> Path:
    """deploy/graphport.env with what an operator fills in."""
    values = {
        "SECRET_KEY": "deploy-check-" + "0123456789abcdef" * 3,
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": database_url_for_subprocesses(),
        "REDIS_URL": settings.REDIS_URL,
        "METRICS_TOKEN": "deploy-check-metrics-" + "0123456789abcdef" * 2,
    }
    text = (ROOT / "deploy" / "graphport.env").read_text()
    for name, value in values.items():
        text, found = re.subn(rf"(?m)^{name}=.*$", f"{name}={value}", text)
        assert found == 1, f"deploy/graphport.env: {name} is not set on one line of its own"
    filled = tmp_path / "graphport.env"
    filled.write_text(text)
    return filled


@pytest.mark.django_db
def test_check_deploy_reports_nothing_with_the_template_filled_in(tmp_path):
    env = production_env(ENV_FILE=str(filled_template(tmp_path)))
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
