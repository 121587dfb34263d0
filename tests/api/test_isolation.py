"""Every endpoint and method, with a key of one tenant against another tenant's objects: the
same answer as for an id that does not exist, and nothing changed or sent."""

from __future__ import annotations

import pytest

from connections.models import Connection, ConnectSession
from graphsync.models import Resource, SyncJob
from tests.api.conftest import problem

pytestmark = pytest.mark.django_db


@pytest.fixture
def globex_job(globex):
    return SyncJob.objects.create(
        connection=globex.connection,
        tenant=globex.tenant,
        resource=Resource.MAIL,
        folder="inbox",
        cursor="globex-delta",
        cursor_is_delta=True,
    )


def attempts(globex, job):
    """(method, path, body) for every endpoint that names one of the other tenant's objects."""
    c = globex.connection.pk
    return [
        ("GET", f"/api/v1/connections/{c}", None),
        ("POST", f"/api/v1/connections/{c}/disconnect", None),
        ("GET", f"/api/v1/connections/{c}/jobs", None),
        ("POST", f"/api/v1/jobs/{job.pk}/run", None),
        ("POST", f"/api/v1/jobs/{job.pk}/resync", None),
        ("GET", f"/api/v1/records?connection={c}&resource=mail", None),
        ("GET", f"/api/v1/proxy/{c}/me", None),
        ("POST", f"/api/v1/proxy/{c}/me/sendMail", b"{}"),
        ("PATCH", f"/api/v1/proxy/{c}/me/messages/1", b"{}"),
        ("PUT", f"/api/v1/proxy/{c}/me/photo/$value", b"x"),
        ("DELETE", f"/api/v1/proxy/{c}/me/messages/1", None),
    ]


def state_of(globex, job) -> tuple:
    connection = Connection.objects.get(pk=globex.connection.pk)
    job = SyncJob.objects.get(pk=job.pk)
    return (
        connection.status,
        connection.refresh_token,
        connection.updated_at,
        job.cursor,
        job.next_run_at,
        job.state,
    )


def test_another_tenants_objects_answer_404_and_nothing_changes(acme_api, globex, globex_job):
    before = state_of(globex, globex_job)
    for method, path, body in attempts(globex, globex_job):
        theirs = acme_api.call(method, path, body or b"")
        problem(theirs, 404, "not-found")
        # The same answer as for an id nobody has.
        unknown = path.replace(str(globex.connection.pk), "987654").replace(
            f"/jobs/{globex_job.pk}/", "/jobs/987654/"
        )
        nobody = acme_api.call(method, unknown, body or b"")
        assert nobody.status_code == 404, (method, unknown, nobody.content)
    assert state_of(globex, globex_job) == before


def test_lists_and_filters_never_show_another_tenant(acme, acme_api, globex):
    rows = acme_api.get("/api/v1/connections").json()["results"]
    assert [r["id"] for r in rows] == [acme.connection.pk]
    assert acme_api.get("/api/v1/connections", {"app": globex.app.pk}).json()["results"] == []


def test_a_connect_session_cannot_use_another_tenants_app(acme, acme_api, globex):
    acme.tenant.return_origins = "https://acme.example"
    acme.tenant.save()
    response = acme_api.post(
        "/api/v1/connect-sessions",
        {"app": globex.app.pk, "end_user_id": "u1", "return_url": "https://acme.example/"},
    )
    body = problem(response, 400, "invalid-request")
    assert body["errors"][0]["field"] == "app"
    assert not ConnectSession.objects.exists()
