"""The webhooks are public: what one request, or one address sending many, can cost is bounded
(a cap on notifications per request, one log line per request, a request budget per address)."""

from __future__ import annotations

import logging
import time

import orjson
import pytest
import redis
from django.conf import settings as django_settings
from django.test import RequestFactory
from django.urls import reverse

from core import keys, ratelimit
from graphsync import notifications, webhooks
from graphsync.models import Resource, Subscription, SyncJob

pytestmark = pytest.mark.django_db
FLOODER = "203.0.113.7"  # documentation addresses: no other test sends from them
NEIGHBOUR = "203.0.113.8"


@pytest.fixture(autouse=True)
def fresh_budgets():
    client = redis.Redis.from_url(django_settings.REDIS_URL)

    def forget() -> None:
        for pattern in (keys.webhook_budget("*"), keys.webhook_junk("*")):
            found = list(client.scan_iter(pattern))
            if found:
                client.delete(*found)

    forget()
    yield
    forget()


@pytest.fixture
def known(acme):
    """A subscription of Acme's inbox job, its clientState "the-real-client-state"."""
    job = SyncJob.objects.create(
        connection=acme.connection, tenant=acme.tenant, resource=Resource.MAIL, folder="inbox"
    )
    return Subscription.objects.create(
        job=job,
        tenant=acme.tenant,
        graph_id="known-sub",
        resource="me/mailFolders('inbox')/messages",
        change_types="created",
        client_state="the-real-client-state",
    )


def post(client, name: str, items: list[dict], address: str = FLOODER, **extra):
    body = orjson.dumps({"value": items})
    return client.post(reverse(name), body, "application/json", REMOTE_ADDR=address, **extra)


def notification_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "graphsync.notifications"]


def test_a_request_over_the_item_cap_is_refused_without_per_item_work(client, caplog):
    caplog.set_level(logging.INFO)
    items = [{"subscriptionId": "x"}] * 45_000  # about 1 MB, under the body limit
    started = time.monotonic()
    response = post(client, "graph-notifications", items)
    assert response.status_code == 413
    assert "at most 1000" in response.text
    assert time.monotonic() - started < 1
    assert notification_records(caplog) == []
    assert len([r for r in caplog.records if r.name.startswith("graphsync")]) == 1


def test_the_lifecycle_url_has_the_same_cap(client):
    items = [{"subscriptionId": "x", "lifecycleEvent": "missed"}] * (notifications.MAX_ITEMS + 1)
    assert post(client, "graph-lifecycle", items).status_code == 413
    assert post(client, "graph-lifecycle", items[:-1]).status_code == 202


def test_dropped_notifications_are_logged_in_one_summary_line_without_secrets(
    client, caplog, known
):
    caplog.set_level(logging.INFO, logger="graphsync.notifications")
    items = [{"subscriptionId": f"unknown-{n}", "clientState": "guess"} for n in range(997)]
    items += [{"subscriptionId": "known-sub", "clientState": "a-wrong-one"}] * 3
    assert len(items) == notifications.MAX_ITEMS

    assert post(client, "graph-notifications", items).status_code == 202
    [record] = notification_records(caplog)
    line = record.getMessage()
    assert record.levelno == logging.WARNING
    assert "0 accepted" in line
    assert (
        "997 dropped for unknown subscription 'unknown-0', 'unknown-1', 'unknown-2' and 994 more"
        in line
    )
    assert "3 dropped with a wrong clientState for subscription 'known-sub'" in line
    assert "guess" not in line and "a-wrong-one" not in line and "the-real" not in line
    assert len(line) < 500
    assert Subscription.objects.get(graph_id="known-sub").notification_count == 0


def test_one_address_past_its_budget_gets_429_with_retry_after(client, settings):
    settings.GRAPH_NOTIFICATION_BUDGET = budget = 40
    # Graph-like traffic, the whole budget in a burst, goes through.
    statuses = {post(client, "graph-notifications", []).status_code for _ in range(budget)}
    assert statuses == {202}

    refused = post(client, "graph-notifications", [])
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= webhooks.BUDGET_WINDOW_SECONDS
    # Both webhooks share the budget, the handshake included; other addresses keep theirs.
    assert post(client, "graph-lifecycle", []).status_code == 429
    handshake = reverse("graph-notifications") + "?validationToken=hello"
    assert client.post(handshake, REMOTE_ADDR=FLOODER).status_code == 429
    assert post(client, "graph-notifications", [], address=NEIGHBOUR).status_code == 202


def test_an_address_sending_notifications_that_do_not_check_out_is_cut_off(client, known):
    guesses = [{"subscriptionId": f"guess-{n}", "clientState": "x"} for n in range(600)]
    # 1,200 dropped: past the budget, counted once the second request has been answered.
    assert post(client, "graph-notifications", guesses).status_code == 202
    assert post(client, "graph-notifications", guesses).status_code == 202
    refused = post(client, "graph-notifications", guesses[:1])
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= webhooks.BUDGET_WINDOW_SECONDS
    assert post(client, "graph-lifecycle", []).status_code == 429
    assert post(client, "graph-notifications", guesses[:1], address=NEIGHBOUR).status_code == 202

    # Notifications that check out cost no junk budget, however many.
    genuine = [{"subscriptionId": "known-sub", "clientState": "the-real-client-state"}] * 1000
    for _ in range(3):
        assert post(client, "graph-notifications", genuine, address=NEIGHBOUR).status_code == 202
    assert Subscription.objects.get(pk=known.pk).notification_count == 3000


def test_forwarded_for_is_trusted_only_behind_a_configured_proxy(settings):
    factory = RequestFactory()

    def sender(remote: str, forwarded: str | None = None) -> str:
        extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {}
        return ratelimit.sender(factory.post("/graph/notifications/", REMOTE_ADDR=remote, **extra))

    settings.SECURE_PROXY_SSL_HEADER = None
    # Anyone can write the header: without a trusted proxy each request counts as its socket's.
    assert sender(FLOODER, forwarded="198.51.100.1") == FLOODER
    assert sender("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert sender("::ffff:203.0.113.7") == FLOODER

    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Behind it: the address the proxy appended, not one the client put in front of it.
    assert sender("10.0.0.2", forwarded="198.51.100.1, 203.0.113.9") == "203.0.113.9"
    assert sender("10.0.0.2") == "10.0.0.2"
    assert sender("10.0.0.2", forwarded="not-an-address") == "unknown"
