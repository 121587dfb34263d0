"""JSON logs (core.logs): one object per line, with where each line came from, and no secret in
any of them."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse
from django.utils import timezone

from connections.models import Connection
from connections.tasks import refresh_connection
from core import logs
from graphsync import engine
from graphsync.models import Resource, SyncJob, SyncRun
from tests.conftest import ADELE, MS_SECRET, ROOT
from tests.flows import follow_back, press_connect
from tests.portal.test_settings import GOOD


@pytest.fixture
def json_lines():
    """Every line the root logger writes at INFO, in the JSON format, as production writes it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: out.getvalue().splitlines()
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_a_line_is_one_object_with_its_context_and_its_traceback(json_lines):
    logger = logging.getLogger("graphport.test")
    token = logs.start(request_id="r-12345678", tenant_id=7)
    try:
        logs.bind(connection_id=42)
        try:
            raise ValueError("line one\nline two")
        except ValueError:
            logger.exception("it failed: %s", "why")
        logger.info("given in extra wins", extra={"tenant_id": 8})
    finally:
        logs.end(token)
    logger.info("after the request")

    failed, extra, after = (json.loads(line) for line in json_lines())
    assert failed["level"] == "ERROR" and failed["logger"] == "graphport.test"
    assert failed["message"] == "it failed: why"
    assert (failed["request_id"], failed["tenant_id"], failed["connection_id"]) == (
        "r-12345678",
        7,
        42,
    )
    assert "ValueError: line one\nline two" in failed["exception"]
    assert extra["tenant_id"] == 8
    assert not set(logs.FIELDS) & set(after)  # nothing carries over past the request


def test_gunicorns_access_line_becomes_fields():
    record = logging.LogRecord(
        "gunicorn.access",
        logging.INFO,
        __file__,
        1,
        '%(h)s "%(m)s %(U)s" %(s)s',
        (
            {
                "h": "10.0.0.1",
                "m": "GET",
                "U": "/livez",
                "s": "200",
                "M": "3",
                "B": "-",
                "{x-request-id}o": "abc123def456",
            },
        ),  # fmt: skip
        None,
    )
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["message"] == '10.0.0.1 "GET /livez" 200'
    assert (entry["method"], entry["path"], entry["status"], entry["duration_ms"]) == (
        "GET",
        "/livez",
        200,
        3,
    )
    assert entry["request_id"] == "abc123def456" and "bytes" not in entry


@pytest.mark.django_db
def test_every_answer_carries_a_request_id_a_proxys_kept_when_well_formed(client):
    first, second = client.get("/livez"), client.get("/livez")
    assert len(first["X-Request-ID"]) == 32 and first["X-Request-ID"] != second["X-Request-ID"]

    sent = "edge-4f6a9c2e-77a1"
    assert client.get("/livez", HTTP_X_REQUEST_ID=sent)["X-Request-ID"] == sent
    for forged in ('x"}\n{"level": "ERROR"', "short", "a" * 200):
        assert client.get("/livez", HTTP_X_REQUEST_ID=forged)["X-Request-ID"] != forged


@pytest.mark.django_db(transaction=True)
def test_connect_sync_and_refresh_log_parseable_lines_without_a_secret(
    client, microsoft, contoso, json_lines
):
    # Connect, as a member's browser does: the code comes back on the callback's query string.
    outcome = microsoft.control.sign_in(press_connect(client, contoso.member, contoso.app), ADELE)
    sent = outcome.get("fields") or {
        k: v[0] for k, v in parse_qs(urlsplit(outcome["url"]).query).items()
    }
    code, state = sent["code"], sent["state"]
    assert follow_back(client, outcome).status_code == 302
    adele = Connection.objects.get(app=contoso.app, ms_object_id=ADELE)
    first_tokens = (adele.access_token, adele.refresh_token)

    # Sync one folder, then refresh through the task, as a worker runs it.
    job = SyncJob.objects.get(connection=adele, resource=Resource.MAIL, folder="inbox")
    assert engine.run(job.pk).run.outcome == SyncRun.Outcome.SUCCEEDED
    Connection.objects.filter(pk=adele.pk).update(access_token_expires_at=timezone.now())
    assert refresh_connection.apply(args=[adele.pk]).get() == "ok"
    adele.refresh_from_db()
    assert adele.refresh_token not in first_tokens  # Microsoft rotated it

    lines = [json.loads(line) for line in json_lines()]  # every line parses
    assert lines and all({"time", "level", "logger", "message"} <= set(e) for e in lines)

    # Where each line came from.
    stored = next(e for e in lines if "connection" in e["message"] and "stored" in e["message"])
    assert stored["request_id"] and stored["connection_id"] == adele.pk
    assert stored["tenant_id"] == contoso.tenant.pk
    ran = next(e for e in lines if e["message"].startswith("sync run"))
    assert (ran["connection_id"], ran["tenant_id"]) == (adele.pk, contoso.tenant.pk)
    refreshed = next(e for e in lines if "token refreshed" in e["message"])
    assert refreshed["task_name"] == "connections.tasks.refresh_connection"
    assert refreshed["task_id"] and refreshed["connection_id"] == adele.pk

    # Nothing anyone could use.
    secrets = {
        "authorization code": code,
        "state": state,
        "client secret": MS_SECRET,
        "access token": adele.access_token,
        "refresh token": adele.refresh_token,
        "first access token": first_tokens[0],
        "first refresh token": first_tokens[1],
    }
    text = "\n".join(json_lines())
    assert [name for name, value in secrets.items() if value in text] == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "route, args",
    [
        ("connections:session", ["gps_" + "k" * 43]),
        ("invitation", ["InvitationTokenValue.abc:def"]),
        ("password_reset_confirm", ["MQ", "ct3cxx-0123456789abcdef0123456789abcdef"]),
    ],
)
def test_a_links_secret_stays_out_of_the_logs(client, json_lines, route, args):
    path = reverse(route, args=args)
    assert logs.redact_path(path) != path
    client.get(path)
    client.get(path + "nothing/here/")  # Django logs the 404's path
    text = "\n".join(json_lines())
    assert logs.REDACTED in text
    assert args[-1] not in text


def test_log_format_names_what_is_wrong():
    env = {k: v for k, v in os.environ.items() if k not in GOOD}
    env.update(GOOD, DJANGO_SETTINGS_MODULE="portal.settings", LOG_FORMAT="xml")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "LOG_FORMAT: 'xml' is not one of text, json" in result.stderr
