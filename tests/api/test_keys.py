"""API keys: made in the admin and shown once, hashed at rest, refused when revoked or expired,
read-only unless made for writing, and rate limited per key."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from connections.models import ApiKey, AuditEvent
from tests.api.conftest import Api, key_for, problem

pytestmark = pytest.mark.django_db

CONNECTIONS = "/api/v1/connections"


def test_an_administrator_creates_a_key_shown_once_and_stored_as_a_hash(client, acme):
    client.force_login(acme.admin)
    response = client.post(
        reverse("admin:connections_apikey_add"),
        {"tenant": acme.tenant.pk, "name": "billing backend", "permission": "write"},
    )
    assert response.status_code == 200
    key = ApiKey.objects.get(name="billing backend")
    raw = response.context["raw"]
    assert raw.startswith("gpk_") and raw in response.text
    assert "no-store" in response["Cache-Control"]
    assert key.tenant == acme.tenant and key.created_by == acme.admin
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert key.prefix == raw[:12]
    assert not ApiKey.objects.filter(key_hash=raw).exists()
    assert AuditEvent.objects.filter(kind="api_key_created", tenant=acme.tenant).exists()

    listing = client.get(reverse("admin:connections_apikey_changelist"))
    assert key.prefix in listing.text and raw not in listing.text
    page = client.get(reverse("admin:connections_apikey_change", args=[key.pk]))
    assert raw not in page.text

    assert Api(raw).get(CONNECTIONS).status_code == 200
    key.refresh_from_db()
    assert key.last_used_at is not None and key.last_used_ip == "127.0.0.1"


def test_a_tenant_administrator_cannot_make_a_key_for_another_tenant(client, acme, globex):
    client.force_login(acme.admin)
    client.post(
        reverse("admin:connections_apikey_add"),
        {"tenant": globex.tenant.pk, "name": "sneaky", "permission": "read"},
    )
    assert not ApiKey.objects.filter(tenant=globex.tenant).exists()


def test_revoking_a_key_in_the_admin_stops_it_and_is_audited(client, acme):
    api = key_for(acme.tenant)
    key = ApiKey.objects.get(tenant=acme.tenant)
    client.force_login(acme.admin)
    client.post(
        reverse("admin:connections_apikey_changelist"),
        {"action": "revoke", "_selected_action": [key.pk]},
    )
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    assert AuditEvent.objects.filter(kind="api_key_revoked").count() == 1
    body = problem(api.get(CONNECTIONS), 401, "unauthorized")
    assert "revoked" in body["detail"]


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (None, "send an API key"),
        ("Basic dXNlcjpwYXNz", "Bearer"),
        ("Bearer not-a-key", "not a Graphport API key"),
        ("Bearer gpk_" + "x" * 43, "Unknown API key"),
    ],
)
def test_requests_without_a_usable_key_answer_401(client, acme, header, words):
    headers = {"Authorization": header} if header else {}
    response = client.get(CONNECTIONS, headers=headers)
    body = problem(response, 401, "unauthorized")
    assert words in body["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_expired_key_answers_401(acme):
    api = key_for(acme.tenant, expires_at=timezone.now() - timedelta(seconds=1))
    assert "expired" in problem(api.get(CONNECTIONS), 401, "unauthorized")["detail"]


def test_a_read_key_cannot_act(acme):
    api = key_for(acme.tenant, write=False)
    assert api.get(CONNECTIONS).status_code == 200
    url = f"/api/v1/connections/{acme.connection.pk}/disconnect"
    body = problem(api.post(url), 403, "forbidden")
    assert "write permission" in body["detail"]
    acme.connection.refresh_from_db()
    assert acme.connection.refresh_token == "Acme-refresh-token-value"


def test_each_key_is_rate_limited_with_retry_after(acme, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 3
    api, other = key_for(acme.tenant), key_for(acme.tenant)
    for _ in range(3):
        assert api.get(CONNECTIONS).status_code == 200
    response = api.get(CONNECTIONS)
    problem(response, 429, "rate-limited")
    assert 1 <= int(response["Retry-After"]) <= 60
    assert other.get(CONNECTIONS).status_code == 200  # the budget is the key's own


def test_an_operator_creates_a_key_for_any_tenant(client, operator, globex):
    client.force_login(operator)
    response = client.post(
        reverse("admin:connections_apikey_add"),
        {"tenant": globex.tenant.pk, "name": "globex backend", "permission": "read"},
    )
    assert response.status_code == 200
    assert ApiKey.objects.get(name="globex backend").tenant == globex.tenant
