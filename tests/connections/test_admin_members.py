"""Tenant administrators create and manage the members of their own tenant."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

pytestmark = pytest.mark.django_db


def member_form(**overrides):
    data = {
        "username": "newbie",
        "email": "newbie@acme.example",
        "first_name": "New",
        "last_name": "Bie",
        "tenant": "",
        "role": "member",
        "is_active": "on",
        "password1": "a-long-unusual-passphrase",
        "password2": "a-long-unusual-passphrase",
    }
    data.update(overrides)
    return data


def test_tenant_admin_adds_a_member_to_their_tenant(client, acme):
    client.force_login(acme.admin)
    response = client.post(
        reverse("admin:connections_member_add"), member_form(tenant=acme.tenant.pk)
    )
    assert response.status_code == 302, response.text
    user = get_user_model().objects.get(username="newbie")
    assert user.membership.tenant == acme.tenant
    assert user.membership.role == "member"
    assert not user.is_staff and not user.is_superuser
    assert user.check_password("a-long-unusual-passphrase")


def test_tenant_admin_cannot_add_members_to_another_tenant(client, acme, globex):
    client.force_login(acme.admin)
    response = client.post(
        reverse("admin:connections_member_add"), member_form(tenant=globex.tenant.pk)
    )
    assert "Select a valid choice" in response.text
    assert not get_user_model().objects.filter(username="newbie").exists()


def test_member_list_and_pages_stay_in_the_tenant(client, acme, globex, operator):
    client.force_login(acme.admin)
    listing = client.get(reverse("admin:connections_member_changelist"))
    assert "acme-member" in listing.text
    assert "globex-member" not in listing.text and "operator" not in listing.text
    for user in (globex.member, globex.admin, operator):
        url = reverse("admin:connections_member_change", args=[user.pk])
        assert client.get(url).status_code == 404


def test_weak_or_mismatched_passwords_are_refused(client, acme):
    client.force_login(acme.admin)
    response = client.post(
        reverse("admin:connections_member_add"),
        member_form(tenant=acme.tenant.pk, password1="123", password2="123"),
    )
    assert "This password is too short" in response.text
    response = client.post(
        reverse("admin:connections_member_add"),
        member_form(tenant=acme.tenant.pk, password2="something-else-entirely"),
    )
    assert "didn’t match" in response.text
    assert not get_user_model().objects.filter(username="newbie").exists()


def test_promoting_to_tenant_admin_gives_admin_access_but_never_superuser(client, acme):
    client.force_login(acme.admin)
    data = member_form(
        tenant=acme.tenant.pk,
        username=acme.member.username,
        email=acme.member.email,
        role="admin",
        password1="",
        password2="",
        is_superuser="on",
    )
    response = client.post(reverse("admin:connections_member_change", args=[acme.member.pk]), data)
    assert response.status_code == 302, response.text
    acme.member.refresh_from_db()
    assert acme.member.is_staff and not acme.member.is_superuser
    assert acme.member.membership.role == "admin"
    assert acme.member.check_password("correct-horse-battery-staple")
