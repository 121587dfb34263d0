"""The Graph proxy through the API: a key's GET reaches Graph with the connection's token, a
write needs a write key, and bad paths and bodies are problems naming the field, nothing sent."""

from __future__ import annotations

import pytest

from connections.models import AuditEvent
from graphsync import proxy
from tests.api.conftest import key_for, problem
from tests.conftest import ADELE
from tests.flows import connected

pytestmark = pytest.mark.django_db


@pytest.fixture
def adele(client, microsoft, contoso):
    return connected(client, microsoft, contoso.member, contoso.app)


def test_a_get_reaches_graph_through_the_connection(adele, contoso):
    api = key_for(contoso.tenant, write=False)
    response = api.get(f"/api/v1/proxy/{adele.pk}/me", {"$select": "id,displayName"})
    assert response.status_code == 200, b"".join(response.streaming_content)
    body = b"".join(response.streaming_content)
    assert ADELE.encode() in body
    assert response["Content-Type"].startswith("application/json")


def test_a_write_needs_a_write_key_and_is_audited_without_its_body(adele, contoso):
    path = f"/api/v1/proxy/{adele.pk}/me/messages"
    reader = key_for(contoso.tenant, write=False)
    problem(reader.call("POST", path, b'{"subject": "secret words"}'), 403, "forbidden")
    assert not AuditEvent.objects.filter(kind="proxy_write").exists()

    writer = key_for(contoso.tenant, write=True)
    response = writer.call("POST", path, b'{"subject": "secret words"}')
    assert response.status_code < 500
    b"".join(response.streaming_content)
    [event] = AuditEvent.objects.filter(kind="proxy_write")
    assert event.connection_id == adele.pk and "secret words" not in str(event.data)


@pytest.mark.parametrize(
    "path",
    [
        "../../admin/",
        "me/../../beta/me",
        "me/%2e%2e/%2e%2e/x",
        "https://evil.example/v1.0/me",
        "//evil.example/me",
        "me\\..\\x",
    ],
)
def test_bad_proxy_paths_name_the_field(adele, contoso, path):
    api = key_for(contoso.tenant)
    response = api.get(f"/api/v1/proxy/{adele.pk}/{path}")
    if response.status_code == 404:  # Django's own resolver already refused the path
        problem(response, 404, "not-found")
        return
    body = problem(response, 400, "invalid-path")
    assert body["errors"][0]["field"] == "path"


def test_a_body_over_the_limit_is_refused(adele, contoso, monkeypatch):
    monkeypatch.setattr(proxy, "MAX_REQUEST_BYTES", 1000)
    api = key_for(contoso.tenant)
    response = api.call("POST", f"/api/v1/proxy/{adele.pk}/me/messages", b"x" * 1001)
    body = problem(response, 413, "body-too-large")
    assert body["errors"][0]["field"] == "body"
