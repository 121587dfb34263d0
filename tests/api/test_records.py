"""The records feed through the API: a consumer loop as the README shows it, and bad input
answered with a problem naming the field."""

from __future__ import annotations

import pytest
from django.utils import timezone

from graphsync import resources, store
from graphsync.models import Resource, SyncJob
from tests.api.conftest import problem

pytestmark = pytest.mark.django_db

MAIL = resources.spec(Resource.MAIL)


@pytest.fixture
def inbox(acme):
    return SyncJob.objects.create(
        connection=acme.connection, tenant=acme.tenant, resource=Resource.MAIL, folder="inbox"
    )


def consume(api, connection_id, cursor=None, limit=2):
    seen = []
    while True:
        params = {"connection": connection_id, "resource": "mail", "limit": limit}
        page = api.get("/api/v1/records", {**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.content
        body = page.json()
        seen += body["records"]
        cursor = body["next_cursor"]
        if not body["has_more"]:
            return seen, cursor


def test_a_consumer_follows_the_feed_and_sees_later_changes(acme, acme_api, inbox):
    store.apply_page(
        inbox, MAIL, [{"id": f"m{n}", "subject": f"s{n}"} for n in range(5)], timezone.now()
    )
    seen, cursor = consume(acme_api, acme.connection.pk)
    assert [r["graph_id"] for r in seen] == ["m0", "m1", "m2", "m3", "m4"]
    assert seen[0]["data"] == {"id": "m0", "subject": "s0"} and seen[0]["deleted"] is False

    store.apply_page(
        inbox,
        MAIL,
        [{"id": "m1", "subject": "edited"}, {"id": "m3", "@removed": {"reason": "deleted"}}],
        timezone.now(),
    )
    later, _ = consume(acme_api, acme.connection.pk, cursor)
    assert [(r["graph_id"], r["deleted"]) for r in later] == [("m1", False), ("m3", True)]
    assert later[0]["data"]["subject"] == "edited"


@pytest.mark.parametrize(
    ("params", "field", "status"),
    [
        ({"connection": "", "resource": "mail"}, "connection", 400),
        ({"connection": "abc", "resource": "mail"}, "connection", 400),
        ({"connection": 987654, "resource": "mail"}, "connection", 404),
        ({"resource": "faxes"}, "resource", 400),
        ({"resource": "mail", "limit": 5000}, "limit", 400),
        ({"resource": "mail", "cursor": "not-a-cursor"}, "cursor", 400),
        ({"resource": "mail", "modified_after": "yesterday"}, "modified_after", 400),
    ],
)
def test_bad_feed_requests_name_the_field(acme, acme_api, params, field, status):
    params = {"connection": acme.connection.pk, **params}
    slug = "not-found" if status == 404 else "invalid-request"
    body = problem(acme_api.get("/api/v1/records", params), status, slug)
    assert body["errors"][0]["field"] == field


def test_a_cursor_of_another_resource_is_refused(acme, acme_api, inbox):
    store.apply_page(inbox, MAIL, [{"id": "m0"}, {"id": "m1"}], timezone.now())
    params = {"connection": acme.connection.pk, "resource": "mail", "limit": 1}
    cursor = acme_api.get("/api/v1/records", params).json()["next_cursor"]
    response = acme_api.get("/api/v1/records", {**params, "resource": "calendar", "cursor": cursor})
    body = problem(response, 400, "invalid-request")
    assert "another connection or resource" in body["detail"]
