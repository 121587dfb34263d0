"""Invitations: sent from the admin, accepted once (with Microsoft or a password), resent,
revoked, expired; and the tenant's sign-in settings, scoped to its administrators."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from connections import invitations
from connections.models import (
    AuditEvent,
    Connection,
    Invitation,
    Membership,
    MicrosoftIdentity,
    Tenant,
)
from tests.conftest import ADELE, FABRIKAM, MS_TENANT
from tests.flows import sign_in

pytestmark = pytest.mark.django_db
User = get_user_model()
NEW_PASSWORD = "a-long-new-passphrase-41"


def invite(client, admin, email="adele.vance@contoso.example", role="member", **extra) -> str:
    """Invite from the admin as `admin`; the link from the e-mail."""
    client.force_login(admin)
    response = client.post(
        reverse("admin:connections_invitation_add"), {"email": email, "role": role, **extra}
    )
    assert response.status_code == 302, response.content
    client.logout()
    return link_in(mail.outbox[-1].body)


def link_in(body: str) -> str:
    return urlsplit(re.search(r"https?://\S+/accounts/invitations/\S+/", body).group(0)).path


def accept_with_password(client, link, username="adele"):
    return client.post(
        link,
        {
            "with": "password",
            "username": username,
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
        },
    )


def test_an_invitation_is_mailed_and_accepted_once_with_a_password(client, contoso):
    link = invite(client, contoso.admin)

    message = mail.outbox[-1]
    assert message.to == ["adele.vance@contoso.example"]
    assert "Contoso Ltd" in message.subject and "7 days" in message.body
    page = client.get(link)
    assert b"Join Contoso Ltd" in page.content and b"member" in page.content

    response = accept_with_password(client, link)

    assert response.status_code == 302
    user = User.objects.get(username="adele")
    assert user.check_password(NEW_PASSWORD) and not user.is_staff
    assert user.membership.tenant == contoso.tenant and user.email == "adele.vance@contoso.example"
    invitation = Invitation.objects.get()
    assert invitation.status == Invitation.Status.ACCEPTED and invitation.accepted_by == user
    # Used once: the same link, in another browser, is refused and creates nothing.
    other = type(client)()
    replay = accept_with_password(other, link, username="mallory")
    assert replay.status_code == 410 and b"already used" in replay.content
    assert not User.objects.filter(username="mallory").exists()
    kinds = set(AuditEvent.objects.values_list("kind", flat=True))
    assert {AuditEvent.Kind.INVITATION_SENT, AuditEvent.Kind.INVITATION_ACCEPTED} <= kinds


def test_an_administrator_invitation_makes_a_tenant_administrator(client, contoso):
    link = invite(client, contoso.admin, email="boss@contoso.example", role="admin")
    accept_with_password(client, link, username="boss")
    boss = User.objects.get(username="boss")
    assert boss.is_staff and boss.membership.role == Membership.Role.ADMIN


def test_a_weak_password_or_a_taken_username_is_named_and_nothing_is_used(client, contoso):
    link = invite(client, contoso.admin)
    response = client.post(
        link, {"with": "password", "username": "contoso-member", "password1": "x", "password2": "x"}
    )
    assert response.status_code == 200
    assert b"not available" in response.content and b"too short" in response.content
    assert Invitation.objects.get().status == Invitation.Status.PENDING


def test_expired_revoked_resent_and_forged_links_are_refused(client, contoso):
    link = invite(client, contoso.admin)
    invitation = Invitation.objects.get()

    forged = link[:-6] + "AAAAA/"
    assert client.get(forged).status_code == 410

    invitations.resend(invitation, contoso.admin)
    assert client.get(link).status_code == 410  # the old link stopped working
    new_link = link_in(mail.outbox[-1].body)
    assert client.get(new_link).status_code == 200

    Invitation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = client.get(new_link)
    assert expired.status_code == 410 and b"expired" in expired.content

    Invitation.objects.update(expires_at=timezone.now() + timedelta(days=1))
    invitations.revoke(invitation, contoso.admin)
    revoked = accept_with_password(client, new_link)
    assert revoked.status_code == 410 and b"withdrawn" in revoked.content
    assert not User.objects.filter(username="adele").exists()


def test_accepted_with_microsoft_by_the_invited_account(client, platform, contoso):
    link = invite(client, contoso.admin)

    response = sign_in(client, platform, path=link, data={"with": "microsoft"})

    assert response.status_code == 302
    user = client.get("/").wsgi_request.user
    assert user.membership.tenant == contoso.tenant
    identity = MicrosoftIdentity.objects.get(user=user)
    assert (identity.ms_tenant_id, identity.ms_object_id) == (MS_TENANT, ADELE)
    assert Invitation.objects.get().accepted_by == user


def test_an_invitation_for_one_address_is_refused_to_another_account(
    client, platform, fabrikam, contoso
):
    link = invite(client, contoso.admin)
    eve = fabrikam.control.add_user(FABRIKAM, upn="eve@fabrikam.example")
    users_before = User.objects.count()

    response = sign_in(client, platform, user=eve["id"], path=link, data={"with": "microsoft"})

    assert response.status_code == 400
    assert b"sent to adele.vance@contoso.example" in response.content
    assert User.objects.count() == users_before and not MicrosoftIdentity.objects.exists()
    assert Invitation.objects.get().status == Invitation.Status.PENDING

    # Unless the tenant accepts any account (a guest's own directory, a personal address).
    contoso.tenant.invitations_any_account = True
    contoso.tenant.save()
    response = sign_in(client, platform, user=eve["id"], path=link, data={"with": "microsoft"})
    assert response.status_code == 302
    assert MicrosoftIdentity.objects.get().ms_tenant_id == FABRIKAM


def test_invitation_through_the_tenants_app_signs_in_and_connects(client, microsoft, contoso):
    contoso.tenant.signin_app = contoso.app
    contoso.tenant.save()
    link = invite(client, contoso.admin)
    assert b"Also connect" in client.get(link).content

    sign_in(client, microsoft, path=link, data={"with": "microsoft", "connect": "on"})

    user = client.get("/").wsgi_request.user
    assert Connection.objects.get(user=user).ms_object_id == ADELE


def test_invitations_are_scoped_to_their_tenant(client, contoso, acme, globex):
    invite(client, acme.admin, email="someone@acme.example")
    invitation = Invitation.objects.get()
    client.force_login(globex.admin)
    listing = client.get(reverse("admin:connections_invitation_changelist"))
    assert b"someone@acme.example" not in listing.content
    url = reverse("admin:connections_invitation_change", args=[invitation.pk])
    assert client.get(url).status_code == 404
    client.post(
        reverse("admin:connections_invitation_changelist"),
        {"action": "revoke", "_selected_action": [invitation.pk]},
    )
    assert Invitation.objects.get().status == Invitation.Status.PENDING
    # A tenant administrator invites into their own tenant, whatever the form says.
    client.post(
        reverse("admin:connections_invitation_add"),
        {"email": "x@globex.example", "role": "admin", "tenant": acme.tenant.pk},
    )
    assert Invitation.objects.get(email="x@globex.example").tenant == globex.tenant


def test_a_member_or_a_pending_invitation_is_not_invited_twice(client, contoso):
    invite(client, contoso.admin)
    client.force_login(contoso.admin)
    response = client.post(
        reverse("admin:connections_invitation_add"),
        {"email": "Adele.Vance@contoso.example", "role": "member"},
    )
    assert b"already has a pending invitation" in response.content
    response = client.post(
        reverse("admin:connections_invitation_add"),
        {"email": contoso.member.email, "role": "member"},
    )
    assert b"already a member" in response.content
    assert Invitation.objects.count() == 1


def tenant_form(tenant, **changes):
    data = {
        "name": tenant.name,
        "return_origins": "",
        "directory_id": tenant.directory_id or "",
        "join_policy": tenant.join_policy,
        "signin_app": "",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
    }
    return {**data, **changes}


def test_a_tenant_admin_verifies_a_directory_by_admin_consent_only(client, contoso):
    client.force_login(contoso.admin)
    url = reverse("admin:connections_tenant_change", args=[contoso.tenant.pk])

    response = client.post(url, tenant_form(contoso.tenant, directory_id=MS_TENANT))
    assert b"granted admin consent" in response.content
    assert Tenant.objects.get(pk=contoso.tenant.pk).directory_id is None

    Connection.objects.create(
        app=contoso.app, kind=Connection.Kind.APPLICATION, ms_tenant_id=MS_TENANT
    )
    response = client.post(
        url, tenant_form(contoso.tenant, directory_id=MS_TENANT.upper(), join_policy="directory")
    )
    assert response.status_code == 302, response.content
    tenant = Tenant.objects.get(pk=contoso.tenant.pk)
    assert tenant.directory_id == MS_TENANT and tenant.join_policy == "directory"
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.SIGN_IN_SETTINGS).exists()


def test_a_directory_belongs_to_one_tenant_and_join_needs_one(client, operator, contoso, acme):
    Tenant.objects.filter(pk=acme.tenant.pk).update(directory_id=MS_TENANT)
    client.force_login(operator)
    url = reverse("admin:connections_tenant_change", args=[contoso.tenant.pk])
    response = client.post(url, tenant_form(contoso.tenant, directory_id=MS_TENANT))
    assert b"This directory is not available" in response.content
    response = client.post(url, tenant_form(contoso.tenant, join_policy="directory"))
    assert b"only once it is verified" in response.content


def test_the_sign_in_app_is_one_of_the_tenants_own(client, contoso, acme):
    client.force_login(contoso.admin)
    url = reverse("admin:connections_tenant_change", args=[contoso.tenant.pk])
    page = client.get(url)
    assert contoso.tenant.signin_key.encode() in page.content  # the organisation's link
    response = client.post(url, tenant_form(contoso.tenant, signin_app=acme.app.pk))
    assert b"Select a valid choice" in response.content
    response = client.post(url, tenant_form(contoso.tenant, signin_app=contoso.app.pk))
    assert response.status_code == 302
