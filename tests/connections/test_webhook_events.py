"""Which events a tenant's webhook endpoints get, what they say, and that each is written in the
transaction of the change that causes it (the outbox): rolled back, nothing; committed, always."""

from __future__ import annotations

import orjson
import pytest
from django.db import transaction
from django.utils import timezone

from connections import connect, credentials, events, expiry, tokens
from connections.models import (
    ClientSecret,
    Connection,
    EntraApp,
    EventType,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from graphsync import engine, feed
from graphsync.models import Resource, SyncJob, SyncRun
from tests.conftest import ADELE, MS_CLIENT_ID, MS_SECRET_ID
from tests.connections.test_tokens import expire_soon
from tests.flows import connected

pytestmark = pytest.mark.django_db(transaction=True)


def endpoint_of(tenant, *types, enabled=True) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(
        tenant=tenant,
        url="https://hooks.customer.example/graphport",
        event_types=list(types),
        enabled=enabled,
        secret="whsec_" + "A" * 32,
    )


def raised(event_type: str) -> list[dict]:
    return [e.payload for e in WebhookEvent.objects.filter(type=event_type).order_by("id")]


@pytest.fixture
def hooked(contoso):
    return endpoint_of(contoso.tenant)


@pytest.fixture
def adele(client, microsoft, contoso, hooked):
    return connected(client, microsoft, contoso.member, contoso.app)


def test_a_new_connection_raises_connection_created_with_ids_and_no_token(adele, hooked):
    [payload] = raised(EventType.CONNECTION_CREATED)
    assert payload["type"] == "connection.created" and payload["id"].startswith("msg_")
    assert payload["tenant"] == hooked.tenant_id
    assert payload["data"]["connection"] == adele.pk and payload["data"]["status"] == "active"
    text = orjson.dumps(payload).decode()
    assert adele.access_token not in text and adele.refresh_token not in text
    [delivery] = WebhookDelivery.objects.filter(event__type=EventType.CONNECTION_CREATED)
    assert delivery.endpoint == hooked and delivery.state == WebhookDelivery.State.PENDING


def test_connecting_again_raises_reconnected(client, microsoft, contoso, adele):
    connected(client, microsoft, contoso.member, contoso.app)
    assert [p["data"]["connection"] for p in raised(EventType.CONNECTION_RECONNECTED)] == [adele.pk]


def test_disconnecting_raises_disconnected(adele, contoso):
    connect.disconnect(adele, contoso.member)
    [payload] = raised(EventType.CONNECTION_DISCONNECTED)
    assert payload["data"]["status"] == "revoked"


def test_a_revoked_grant_raises_reconnect_needed_once(microsoft, adele):
    microsoft.control.revoke_grant(ADELE, MS_CLIENT_ID)
    expire_soon(adele)
    for _ in range(2):
        with pytest.raises(tokens.ReconnectNeeded):
            tokens.access_token(adele.pk)
    [payload] = raised(EventType.CONNECTION_RECONNECT_NEEDED)
    assert payload["data"]["connection"] == adele.pk and "AADSTS" in payload["data"]["reason"]


def test_broken_credentials_raise_one_event_per_app(microsoft, contoso, adele):
    microsoft.control.set_secret_expiry(MS_CLIENT_ID, MS_SECRET_ID, expired=True)
    expire_soon(adele)
    with pytest.raises(tokens.AppCredentialsBroken):
        tokens.access_token(adele.pk)
    credentials.verify(EntraApp.objects.get(pk=contoso.app.pk))  # already broken: no second
    [payload] = raised(EventType.APP_CREDENTIALS_BROKEN)
    assert payload["data"]["app"] == contoso.app.pk and "AADSTS7000222" in payload["data"]["reason"]


def test_an_expiring_secret_raises_an_event_naming_it_never_its_value(contoso, hooked):
    secret = ClientSecret.objects.get(app=contoso.app)
    ClientSecret.objects.filter(pk=secret.pk).update(
        expires_on=timezone.localdate() + timezone.timedelta(days=6)
    )
    expiry.warn_expiring_secrets()
    expiry.warn_expiring_secrets()  # once per threshold
    [payload] = raised(EventType.APP_CREDENTIALS_EXPIRING)
    assert payload["data"]["days_left"] == 6 and payload["data"]["credential"] == "client secret"
    assert secret.value not in orjson.dumps(payload).decode()


def test_a_sync_that_changed_records_raises_completed_with_where_they_are(microsoft, adele):
    job = SyncJob.objects.get(connection=adele, resource=Resource.MAIL, folder="inbox")
    engine.run(job.pk)
    WebhookEvent.objects.all().delete()
    microsoft.control.add_items(ADELE, "messages", count=3, folder="inbox")

    run = engine.run(job.pk).run
    [payload] = raised(EventType.SYNC_COMPLETED)
    data = payload["data"]
    assert (data["job"], data["run"], data["resource"]) == (job.pk, run.pk, "mail")
    assert (data["created"], data["updated"], data["deleted"]) == (3, 0, 0)
    # The cursors hold exactly the run's changes.
    page = feed.page(adele, "mail", data["records"]["from_cursor"], 1000)
    assert len(page.records) == 3

    quiet = engine.run(job.pk).run  # nothing changed: no event
    assert quiet.outcome == SyncRun.Outcome.SUCCEEDED
    assert len(raised(EventType.SYNC_COMPLETED)) == 1


def test_a_failing_job_raises_failed_once_per_spell(microsoft, adele, contoso):
    job = SyncJob.objects.get(connection=adele, resource=Resource.MAIL, folder="inbox")
    Connection.objects.filter(pk=adele.pk).update(status=Connection.Status.RECONNECT_NEEDED)
    for _ in range(3):
        SyncJob.objects.filter(pk=job.pk).update(next_run_at=timezone.now())
        engine.run(job.pk)
    [payload] = raised(EventType.SYNC_FAILED)
    assert payload["data"]["job"] == job.pk and payload["data"]["failure_streak"] == 1


def test_a_rolled_back_change_raises_nothing(contoso, hooked):
    with pytest.raises(RuntimeError), transaction.atomic():
        events.emit(EventType.SYNC_COMPLETED, contoso.tenant, {"job": 1})
        raise RuntimeError("the change failed")
    assert not WebhookEvent.objects.exists() and not WebhookDelivery.objects.exists()
    events.emit(EventType.SYNC_COMPLETED, contoso.tenant, {"job": 1})
    assert WebhookDelivery.objects.count() == 1


def test_only_enabled_endpoints_that_want_the_type_get_a_delivery(contoso, hooked, globex):
    endpoint_of(contoso.tenant, EventType.SYNC_FAILED)
    endpoint_of(contoso.tenant, enabled=False)
    endpoint_of(globex.tenant)  # another tenant's endpoint never hears of it
    events.emit(EventType.SYNC_COMPLETED, contoso.tenant, {"job": 1})
    assert list(WebhookDelivery.objects.values_list("endpoint", flat=True)) == [hooked.pk]
    events.emit(EventType.SYNC_COMPLETED, globex.tenant.pk, {"job": 2})
    assert WebhookDelivery.objects.count() == 2


def test_without_endpoints_nothing_is_stored(contoso):
    assert events.emit(EventType.SYNC_COMPLETED, contoso.tenant, {"job": 1}) is None
    assert not WebhookEvent.objects.exists()


def test_an_endpoint_taking_records_inline_gets_them_in_its_own_event(microsoft, adele, contoso):
    WebhookEndpoint.objects.filter(tenant=contoso.tenant).update(event_types=["sync.failed"])
    rich = endpoint_of(contoso.tenant, EventType.SYNC_COMPLETED)
    WebhookEndpoint.objects.filter(pk=rich.pk).update(include_records=True)
    plain = endpoint_of(contoso.tenant, EventType.SYNC_COMPLETED)
    job = SyncJob.objects.get(connection=adele, resource=Resource.MAIL, folder="inbox")
    engine.run(job.pk)
    WebhookEvent.objects.all().delete()
    added = microsoft.control.add_items(ADELE, "messages", count=2, folder="inbox")

    engine.run(job.pk)
    by_endpoint = {
        d.endpoint_id: d.event.payload["data"]
        for d in WebhookDelivery.objects.select_related("event")
    }
    assert set(by_endpoint) == {rich.pk, plain.pk}
    inline = by_endpoint[rich.pk]["records_inline"]
    assert sorted(r["graph_id"] for r in inline) == sorted(added)
    assert by_endpoint[rich.pk]["records_complete"] is True and inline[0]["data"]["id"] in added
    assert "records_inline" not in by_endpoint[plain.pk]
