"""Token health in the admin: details, event history, refresh now, disable, filters."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from connections.models import AuditEvent, Connection
from tests.flows import connected

pytestmark = pytest.mark.django_db


def test_connection_page_shows_token_health_and_history(client, microsoft, contoso):
    connection = connected(client, microsoft, contoso.member, contoso.app)
    client.force_login(contoso.admin)
    page = client.get(reverse("admin:connections_connection_change", args=[connection.pk]))
    for words in (
        "Token health",
        "Refresh token age",
        "Failure streak",
        "Event history",
        "Connected adele.vance@contoso.example.",
    ):
        assert words in page.text
    assert connection.refresh_token not in page.text
    assert connection.access_token not in page.text


def test_refresh_now_and_disable_actions(client, microsoft, contoso):
    connection = connected(client, microsoft, contoso.member, contoso.app)
    client.force_login(contoso.admin)
    changelist = reverse("admin:connections_connection_changelist")
    client.post(changelist, {"action": "refresh_now", "_selected_action": [connection.pk]})
    refreshed = Connection.objects.get(pk=connection.pk)
    assert refreshed.access_token != connection.access_token
    assert AuditEvent.objects.filter(connection=connection, kind="refreshed").exists()

    client.post(changelist, {"action": "disable", "_selected_action": [connection.pk]})
    disabled = Connection.objects.get(pk=connection.pk)
    assert disabled.status == Connection.Status.DISABLED
    assert "Disabled by contoso-admin" in disabled.status_reason


def test_filters_for_reconnect_needed_and_broken_credentials(client, acme):
    Connection.objects.filter(pk=acme.connection.pk).update(
        status=Connection.Status.RECONNECT_NEEDED,
        access_token_expires_at=timezone.now() - timedelta(hours=1),
    )
    client.force_login(acme.admin)
    changelist = reverse("admin:connections_connection_changelist")
    listed = client.get(changelist, {"status__exact": "reconnect_needed"}).text
    assert "member@acme.example" in listed
    assert (
        "member@acme.example"
        not in client.get(changelist, {"status__exact": "app_credentials_broken"}).text
    )
