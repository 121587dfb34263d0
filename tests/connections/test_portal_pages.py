from __future__ import annotations

import re

import pytest
from django.core import mail
from django.urls import reverse

from tests.personas import PASSWORD

pytestmark = pytest.mark.django_db


def test_anonymous_visitors_are_sent_to_sign_in(client):
    response = client.get(reverse("connections:mine"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_member_signs_in_and_sees_only_their_tenants_apps(client, acme, globex):
    response = client.post(
        reverse("login"), {"username": acme.member.username, "password": PASSWORD}, follow=True
    )
    assert "My Microsoft connections" in response.text
    assert "Acme mail sync" in response.text
    assert "Globex" not in response.text
    assert "member@acme.example" in response.text  # their own connection


def test_missing_scopes_are_pointed_out(client, acme):
    acme.connection.granted_scopes = "openid profile User.Read"
    acme.connection.save()
    client.force_login(acme.member)
    page = client.get(reverse("connections:mine")).text
    assert "Not granted" in page and "<code>Mail.Read</code>" in page


def test_password_reset_by_email(client, acme):
    response = client.post(reverse("password_reset"), {"email": acme.member.email})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    link = re.search(r"http://[^\s]+/reset/[^\s]+/", mail.outbox[0].body).group(0)
    path = link.split("testserver", 1)[-1]
    form = client.get(path, follow=True)
    assert form.status_code == 200
    done = client.post(
        form.redirect_chain[-1][0],
        {"new_password1": "another-long-passphrase", "new_password2": "another-long-passphrase"},
    )
    assert done.status_code == 302
    acme.member.refresh_from_db()
    assert acme.member.check_password("another-long-passphrase")


def test_login_without_a_tenant_explains(client, operator):
    client.force_login(operator)
    response = client.get(reverse("connections:mine"))
    assert response.status_code == 403
    assert "does not belong to an organisation" in response.text
