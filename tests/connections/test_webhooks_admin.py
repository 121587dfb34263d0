"""Webhooks in the admin: endpoints made and edited by a tenant's administrator (the secret
shown once, URLs refused with the field named, rotation, a test event, replays), deliveries and
events inspected, tenants kept apart, and failing endpoints on the dashboard."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from connections import events
from connections.models import (
    EventType,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from connections.models.webhooks import new_secret
from portal import dashboard

pytestmark = pytest.mark.django_db

REAL_GETADDRINFO = socket.getaddrinfo
ADD = "admin:connections_webhookendpoint_add"
ENDPOINTS = "admin:connections_webhookendpoint_changelist"
DELIVERIES = "admin:connections_webhookdelivery_changelist"


def endpoint_of(world, url: str = "https://hooks.example.com/graphport", **fields):
    return WebhookEndpoint.objects.create(
        tenant=world.tenant, url=url, secret=new_secret(), **fields
    )


def form_data(world, url: str = "https://hooks.example.com/graphport", **fields) -> dict:
    return {
        "tenant": world.tenant.pk,
        "url": url,
        "description": "Our ERP",
        "event_types": ["sync.completed", "connection.created"],
        "enabled": "on",
        "_save": "Save",
        **fields,
    }


def act(client, url_name: str, action: str, *rows, **extra):
    data = {"action": action, "_selected_action": [row.pk for row in rows], **extra}
    return client.post(reverse(url_name), data)


def change_url(row) -> str:
    meta = row._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[row.pk])


@pytest.fixture
def logged_in(client, acme):
    client.force_login(acme.admin)
    return client


# --- the secret, shown once ---------------------------------------------------------------------


def test_an_administrator_creates_an_endpoint_and_sees_its_secret_once(logged_in, acme):
    response = logged_in.post(reverse(ADD), form_data(acme))

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    [(endpoint, secret)] = response.context["shown"]
    assert secret.startswith("whsec_") and secret in response.text
    endpoint = WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert endpoint.secret == secret and endpoint.tenant == acme.tenant
    assert endpoint.event_types == ["sync.completed", "connection.created"]
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM connections_webhookendpoint")
        assert secret not in cursor.fetchone()[0]  # encrypted at rest

    for page in (reverse(ENDPOINTS), change_url(endpoint), reverse(DELIVERIES)):
        text = logged_in.get(page).text
        assert secret not in text and secret.removeprefix("whsec_")[:12] not in text, page


def test_rotating_shows_the_new_secret_once_and_the_old_one_signs_a_day_longer(logged_in, acme):
    endpoint = endpoint_of(acme)
    old = endpoint.secret

    response = act(logged_in, ENDPOINTS, "rotate_secret", endpoint)

    [(_, new)] = response.context["shown"]
    assert new in response.text and old not in response.text
    endpoint.refresh_from_db()
    assert (endpoint.secret, endpoint.previous_secret) == (new, old)
    assert "also signs until" in response.text
    page = logged_in.get(change_url(endpoint)).text
    assert new not in page and old not in page
    assert "The previous secret also signs until" in page


def test_admin_pages_never_load_the_secrets(logged_in, acme, operator, client):
    endpoint = endpoint_of(acme)
    events.send_test(endpoint)
    delivery = WebhookDelivery.objects.get()
    pages = [
        reverse(ENDPOINTS),
        change_url(endpoint),
        reverse(DELIVERIES),
        change_url(delivery),
        change_url(delivery.event),
    ]
    for user in (acme.admin, operator):
        client.force_login(user)
        for page in pages:
            with CaptureQueriesContext(db_connection) as queries:
                assert client.get(page).status_code == 200, page
            assert not [q for q in queries if '"secret"' in q["sql"]], page


# --- what may be saved -----------------------------------------------------------------------


def resolving(monkeypatch, name: str, address: str) -> None:
    def getaddrinfo(host, port, *args, **kwargs):
        if host != name:
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 443))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://hooks.example.com/graphport", "Must be https://"),
        ("https://erp:hunter2@hooks.example.com/", "Must not contain a user name or password"),
        ("https://127.0.0.1:8443/hooks", "127.0.0.1 is an internal address"),
        ("https://10.20.30.40/hooks", "is an internal address (10.20.30.40)"),
        ("https://169.254.169.254/latest/meta-data/", "is an internal address"),
        ("https://[::1]/hooks", "::1 is an internal address"),
        ("https://intranet.acme.example/hooks", "intranet.acme.example is an internal address"),
        ("ftp://hooks.example.com/", "Must be an https:// URL"),
    ],
)
def test_bad_urls_are_refused_naming_the_field(logged_in, acme, settings, monkeypatch, url, says):
    settings.MICROSOFT_ALLOW_HTTP = False
    settings.MICROSOFT_ALLOW_INTERNAL_HOSTS = True  # the emulator's switch: not for webhooks
    settings.WEBHOOK_ALLOWED_HOSTS = []
    resolving(monkeypatch, "intranet.acme.example", "192.168.1.20")

    response = logged_in.post(reverse(ADD), form_data(acme, url))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["url"] and says in errors["url"][0]
    assert 'class="form-row errors field-url"' in response.text
    assert not WebhookEndpoint.objects.exists()


def test_an_internal_host_listed_by_the_operator_is_accepted(logged_in, acme, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.MICROSOFT_ALLOW_HTTP = True  # development: a receiver on this machine
    response = logged_in.post(reverse(ADD), form_data(acme, "http://127.0.0.1:8099/hooks"))
    assert response.status_code == 200 and "shown" in response.context
    assert WebhookEndpoint.objects.get().url == "http://127.0.0.1:8099/hooks"


def test_the_event_types_offered_are_every_type_but_the_test_event(logged_in, acme):
    form = logged_in.get(reverse(ADD)).context["adminform"].form
    offered = [value for value, _ in form.fields["event_types"].choices]
    assert offered == [value for value in EventType.values if value != EventType.TEST]
    response = logged_in.post(reverse(ADD), form_data(acme, event_types=[EventType.TEST]))
    assert "event_types" in response.context["adminform"].form.errors


def test_saving_the_page_leaves_the_workers_columns_alone(logged_in, acme):
    endpoint = endpoint_of(acme)
    page = logged_in.get(change_url(endpoint))  # loaded before a worker took the endpoint
    assert page.status_code == 200
    until = timezone.now() + timedelta(seconds=30)
    failing = timezone.now() - timedelta(hours=1)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        lease_owner="worker-1", leased_until=until, failing_since=failing
    )
    logged_in.post(change_url(endpoint), form_data(acme, description="Renamed"))
    endpoint.refresh_from_db()
    assert endpoint.description == "Renamed"
    assert (endpoint.lease_owner, endpoint.leased_until) == ("worker-1", until)
    assert endpoint.failing_since == failing


def test_enabling_a_disabled_endpoint_clears_its_reason(logged_in, acme):
    endpoint = endpoint_of(acme, failing_since=timezone.now() - timedelta(days=6))
    endpoint.disable("Every attempt failed for 5 days.")
    logged_in.post(change_url(endpoint), form_data(acme))
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.disabled_reason == "" and endpoint.failing_since is None


# --- tenants kept apart ------------------------------------------------------------------------


def test_a_tenant_administrator_sees_only_their_tenants_webhooks(logged_in, acme, globex):
    mine, theirs = endpoint_of(acme), endpoint_of(globex, "https://hooks.globex.example/")
    events.send_test(mine)
    events.send_test(theirs)
    their_delivery = WebhookDelivery.objects.get(endpoint=theirs)

    listing = logged_in.get(reverse(ENDPOINTS)).text
    assert change_url(mine) in listing and change_url(theirs) not in listing
    deliveries = logged_in.get(reverse(DELIVERIES))
    assert change_url(their_delivery) not in deliveries.text
    assert "globex" not in deliveries.text.lower()  # not even in the endpoint filter
    for row in (theirs, their_delivery, their_delivery.event):
        assert logged_in.get(change_url(row)).status_code == 404
    assert logged_in.post(change_url(theirs), form_data(acme)).status_code == 404
    act(logged_in, ENDPOINTS, "rotate_secret", theirs)  # an id of theirs is simply not selected
    assert WebhookEndpoint.objects.get(pk=theirs.pk).secret == theirs.secret


def test_a_tenant_administrator_cannot_make_an_endpoint_for_another_tenant(logged_in, acme, globex):
    response = logged_in.post(reverse(ADD), form_data(globex))
    assert "tenant" in response.context["adminform"].form.errors
    assert not WebhookEndpoint.objects.exists()


def test_an_operator_sees_every_tenant_and_filters_by_tenant(client, operator, acme, globex):
    endpoint_of(acme)
    theirs = endpoint_of(globex, "https://hooks.globex.example/")
    client.force_login(operator)
    listing = client.get(reverse(ENDPOINTS), {"tenant__id__exact": globex.tenant.pk})
    assert listing.status_code == 200
    assert list(listing.context["cl"].result_list) == [theirs]


# --- actions -----------------------------------------------------------------------------------


def test_send_test_event_queues_a_webhook_test_delivery(logged_in, acme):
    endpoint = endpoint_of(acme, event_types=[EventType.SYNC_FAILED])
    response = act(logged_in, ENDPOINTS, "send_test_event", endpoint)
    assert response.status_code == 302
    delivery = WebhookDelivery.objects.get()
    assert delivery.endpoint == endpoint and delivery.event.type == EventType.TEST
    assert delivery.state == WebhookDelivery.State.PENDING


def failed_delivery(endpoint, days_ago: float = 0) -> WebhookDelivery:
    event = events.send_test(endpoint)
    delivery = WebhookDelivery.objects.get(event=event)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state=WebhookDelivery.State.FAILED,
        attempts=8,
        last_status=500,
        created_at=timezone.now() - timedelta(days=days_ago),
    )
    return delivery


def test_replaying_deliveries_sends_the_same_event_again(logged_in, acme):
    endpoint = endpoint_of(acme)
    delivery = failed_delivery(endpoint)

    response = act(logged_in, DELIVERIES, "replay", delivery)

    assert response.status_code == 302
    replayed = WebhookDelivery.objects.get(pk=delivery.pk)
    assert replayed.state == WebhookDelivery.State.PENDING and replayed.attempts == 0
    assert replayed.event_id == delivery.event_id  # the same webhook-id
    assert WebhookEvent.objects.count() == 1


def test_replay_failed_since_asks_for_a_time_then_replays_that_endpoints_failures(logged_in, acme):
    endpoint, other = endpoint_of(acme), endpoint_of(acme, "https://other.example.com/")
    old, recent = failed_delivery(endpoint, days_ago=3), failed_delivery(endpoint, days_ago=0.5)
    elsewhere = failed_delivery(other, days_ago=0.5)

    asking = act(logged_in, ENDPOINTS, "replay_failed_since", endpoint)
    assert asking.status_code == 200
    assert 'name="since"' in asking.text and 'type="datetime-local"' in asking.text
    assert WebhookDelivery.objects.filter(state="pending").count() == 0  # nothing yet

    since = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    done = act(logged_in, ENDPOINTS, "replay_failed_since", endpoint, since=since, apply="1")

    assert done.status_code == 302
    states = dict(WebhookDelivery.objects.values_list("pk", "state"))
    assert states == {old.pk: "failed", recent.pk: "pending", elsewhere.pk: "failed"}


def test_replay_failed_since_refuses_a_bad_time_on_its_page(logged_in, acme):
    endpoint = endpoint_of(acme)
    response = act(
        logged_in, ENDPOINTS, "replay_failed_since", endpoint, since="yesterday", apply="1"
    )
    assert response.status_code == 200 and response.context["form"].errors["since"]


# --- deliveries and events, read-only --------------------------------------------------------


def test_the_delivery_list_filters_by_state_endpoint_event_type_and_date(logged_in, acme):
    erp, crm = endpoint_of(acme), endpoint_of(acme, "https://crm.example.com/")
    failed = failed_delivery(erp)
    events.emit(EventType.SYNC_COMPLETED, acme.tenant, {"job": 1})  # one to each endpoint

    def listed(**params) -> set[int]:
        response = logged_in.get(reverse(DELIVERIES), params)
        assert response.status_code == 200, params
        assert "?e=1" not in response.get("Location", "")
        return {row.pk for row in response.context["cl"].result_list}

    assert listed(state__exact="failed") == {failed.pk}
    assert len(listed(endpoint=crm.pk)) == 1
    assert len(listed(event__type__exact=EventType.SYNC_COMPLETED)) == 2
    an_hour_ago = (timezone.now() - timedelta(hours=1)).isoformat()
    assert len(listed(created_at__gte=an_hour_ago)) == 3
    assert listed(created_at__lt=an_hour_ago) == set()
    # Only declared filters: no probing a column the list does not show.
    probe = logged_in.get(reverse(DELIVERIES), {"endpoint__url__startswith": "https://crm"})
    assert probe.status_code == 400


def test_a_delivery_page_shows_its_attempts_and_payload_read_only(logged_in, acme):
    endpoint = endpoint_of(acme)
    delivery = failed_delivery(endpoint)
    delivery.attempt_log.create(
        tenant=acme.tenant, status_code=500, duration_ms=12, response_excerpt="Upstream down"
    )
    page = logged_in.get(change_url(delivery))
    assert page.status_code == 200
    assert "Upstream down" in page.text and delivery.event.public_id in page.text
    assert "webhook.test" in page.text and 'name="_save"' not in page.text
    assert logged_in.get(change_url(delivery.event)).status_code == 200


# --- the dashboard -----------------------------------------------------------------------------


def test_the_dashboard_lists_the_viewers_failing_and_disabled_endpoints(
    client, operator, acme, globex
):
    failing = endpoint_of(acme, description="Acme ERP", failing_since=timezone.now())
    gone = endpoint_of(acme, "https://old.example.com/", description="Acme old")
    gone.disable("The receiver answered 410 Gone")
    endpoint_of(acme, "https://fine.example.com/", description="Acme fine")
    endpoint_of(globex, "https://globex.example.com/", description="Globex CRM").disable("410")

    board = dashboard.for_user(acme.admin)
    assert [endpoint.name for endpoint in board.webhooks] == ["Acme old", "Acme ERP"]
    assert board.webhooks[0].problem == "disabled: The receiver answered 410 Gone"
    assert board.webhooks[1].problem.startswith("every attempt failing since ")
    client.force_login(acme.admin)
    html = client.get(reverse("admin:index")).text
    assert "Acme ERP" in html and "410 Gone" in html and "Globex" not in html
    assert change_url(failing) in html

    client.force_login(operator)
    html = client.get(reverse("admin:index")).text
    assert "Globex CRM" in html and "Acme old" in html
