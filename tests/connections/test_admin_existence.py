"""Refusals in the admin never tell one tenant what another tenant has."""

from __future__ import annotations

import pytest
from django.urls import reverse

from connections.models import Tenant
from tests.personas import PASSWORD

pytestmark = pytest.mark.django_db


def test_renaming_your_tenant_to_a_taken_name_does_not_say_it_exists(client, acme, globex):
    client.force_login(acme.admin)
    url = reverse("admin:connections_tenant_change", args=[acme.tenant.pk])
    response = client.post(url, {"name": "Globex", **_no_inline_rows()})
    assert response.status_code == 200
    assert "This name is not available: choose another." in response.text
    assert "already exists" not in response.text
    assert Tenant.objects.get(pk=acme.tenant.pk).name == "Acme"


def test_adding_a_member_with_a_username_taken_elsewhere_does_not_say_it_exists(
    client, acme, globex
):
    client.force_login(acme.admin)
    response = client.post(
        reverse("admin:connections_member_add"),
        {
            "username": globex.member.username,
            "email": "new@acme.example",
            "tenant": acme.tenant.pk,
            "role": "member",
            "is_active": "on",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert response.status_code == 200
    assert "This username is not available: choose another." in response.text
    assert "already exists" not in response.text


def _no_inline_rows() -> dict[str, str]:
    prefix = "memberships"
    return {
        f"{prefix}-TOTAL_FORMS": "0",
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
