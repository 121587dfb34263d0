"""Connections and sync jobs through the API, and the problem documents bad input gets."""

from __future__ import annotations

import pytest

from connections.models import AuditEvent, Connection
from graphsync.models import Resource, SyncJob, SyncRun
from tests.api.conftest import problem

pytestmark = pytest.mark.django_db


def make_job(world, resource=Resource.MAIL, folder="inbox", **fields) -> SyncJob:
    return SyncJob.objects.create(
        connection=world.connection, tenant=world.tenant, resource=resource, folder=folder, **fields
    )


def test_connections_list_shows_status_scopes_and_token_health_never_a_token(acme, acme_api):
    acme.connection.granted_scopes = "User.Read Mail.Read"
    acme.connection.save()
    response = acme_api.get("/api/v1/connections")
    assert response.status_code == 200
    [row] = response.json()["results"]
    assert row["id"] == acme.connection.pk and row["status"] == "active"
    assert row["scopes_granted"] == ["User.Read", "Mail.Read"]
    assert set(row["token_health"]) >= {"access_token_expires_at", "failure_streak"}
    assert "token-value" not in response.content.decode()
    assert response.json()["next_cursor"] is None


def test_connections_filter_by_app_status_and_end_user(acme, acme_api):
    Connection.objects.filter(pk=acme.connection.pk).update(end_user_id="customer-7")
    assert (
        len(acme_api.get("/api/v1/connections", {"end_user": "customer-7"}).json()["results"]) == 1
    )
    assert acme_api.get("/api/v1/connections", {"end_user": "nobody"}).json()["results"] == []
    assert acme_api.get("/api/v1/connections", {"status": "revoked"}).json()["results"] == []
    assert len(acme_api.get("/api/v1/connections", {"app": acme.app.pk}).json()["results"]) == 1
    body = problem(acme_api.get("/api/v1/connections", {"status": "bogus"}), 400, "invalid-request")
    assert body["errors"][0]["field"] == "status"


def test_lists_page_with_signed_cursors(acme, acme_api):
    for n in range(4):
        Connection.objects.create(
            app=acme.app, ms_tenant_id=acme.connection.ms_tenant_id, ms_object_id=f"oid-{n}"
        )
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = acme_api.get("/api/v1/connections", params).json()
        seen += [row["id"] for row in body["results"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(Connection.objects.filter(app=acme.app).values_list("pk", flat=True))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 1001}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": "MTIz:1t2Xyz:forged"}, "cursor"),
    ],
)
def test_bad_paging_is_a_problem_naming_the_field(acme_api, params, field):
    body = problem(acme_api.get("/api/v1/connections", params), 400, "invalid-request")
    assert body["errors"] == [{"field": field, "detail": body["detail"]}]
    assert body["detail"].startswith(f"{field}:")


def test_a_cursor_of_one_list_is_refused_by_another(acme, acme_api):
    for n in range(2):
        make_job(acme, folder=f"f{n}")
    cursor = acme_api.get(f"/api/v1/connections/{acme.connection.pk}/jobs", {"limit": 1}).json()[
        "next_cursor"
    ]
    assert cursor
    response = acme_api.get("/api/v1/connections", {"cursor": cursor})
    problem(response, 400, "invalid-request")


def test_a_connection_and_its_jobs(acme, acme_api):
    job = make_job(acme, live_count=12)
    detail = acme_api.get(f"/api/v1/connections/{acme.connection.pk}").json()
    assert detail["user_principal_name"] == "member@acme.example"
    idle = make_job(acme, folder="archive")
    SyncRun.objects.create(
        job=job, tenant=acme.tenant, trigger="schedule", outcome="succeeded", pages=1
    )
    latest = SyncRun.objects.create(
        job=job, tenant=acme.tenant, trigger="manual", outcome="succeeded", pages=3, created=40
    )
    jobs = acme_api.get(f"/api/v1/connections/{acme.connection.pk}/jobs").json()["results"]
    assert [(j["id"], j["resource"], j["records"]) for j in jobs] == [
        (job.pk, "mail", 12),
        (idle.pk, "mail", 0),
    ]
    assert jobs[0]["last_run"]["id"] == latest.pk and jobs[0]["last_run"]["created"] == 40
    assert jobs[1]["last_run"] is None


def test_run_now_and_full_resync_are_accepted_and_audited(
    acme, acme_api, django_capture_on_commit_callbacks
):
    job = make_job(acme, cursor="delta-cursor", cursor_is_delta=True)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert acme_api.post(f"/api/v1/jobs/{job.pk}/run").status_code == 202
        response = acme_api.post(f"/api/v1/jobs/{job.pk}/resync")
    assert response.status_code == 202
    assert len(queued) == 2  # one run each, sent after commit
    job.refresh_from_db()
    assert job.cursor == ""
    assert AuditEvent.objects.filter(kind="api_action", connection=acme.connection).count() == 2


def test_a_disabled_job_is_a_conflict(acme, acme_api):
    job = make_job(acme, enabled=False, disabled_reason="switched off")
    body = problem(acme_api.post(f"/api/v1/jobs/{job.pk}/run"), 409, "job-disabled")
    assert "switched off" in body["detail"]


def test_disconnect_deletes_the_tokens_and_keeps_the_row(acme, acme_api):
    response = acme_api.post(f"/api/v1/connections/{acme.connection.pk}/disconnect")
    assert response.status_code == 200 and response.json()["status"] == "revoked"
    acme.connection.refresh_from_db()
    assert acme.connection.refresh_token is None
    assert AuditEvent.objects.filter(kind="disconnected", connection=acme.connection).exists()


def test_unknown_ids_and_endpoints_are_problem_documents(acme_api):
    problem(acme_api.get("/api/v1/connections/999999"), 404, "not-found")
    problem(acme_api.post("/api/v1/jobs/999999/run"), 404, "not-found")
    problem(acme_api.get("/api/v1/nothing-here"), 404, "not-found")
    problem(acme_api.call("DELETE", "/api/v1/connections"), 405, "method-not-allowed")


def test_a_malformed_body_is_a_problem(acme_api):
    response = acme_api.call("POST", "/api/v1/connect-sessions", b"{not json")
    problem(response, 400, "malformed-body")
