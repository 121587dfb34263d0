"""The notices e-mailed about connections and apps: their words and who gets them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.utils import timezone

from connections import notices
from connections.expiry import warn_expiring_secrets
from connections.models import AppCertificate, ClientSecret, EntraApp
from tests.personas import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def silent_admin(acme):
    """A second administrator of Acme, without an e-mail address."""
    user = make_user("acme-silent-admin", staff=True, tenant=acme.tenant, role="admin")
    get_user_model().objects.filter(pk=user.pk).update(email="")
    return user


def expire_in(world, days: int) -> None:
    ClientSecret.objects.filter(pk=world.secret.pk).update(
        expires_on=timezone.localdate() + timedelta(days=days)
    )


def test_an_expiry_warning_a_day_ahead_says_one_day(acme):
    expire_in(acme, 1)
    assert warn_expiring_secrets() == 1
    [message] = mail.outbox
    assert message.subject == "[Graphport] A client secret of Acme mail sync expires in 1 day"
    assert "expires in 1 day " in message.body
    assert "1 days" not in message.subject + message.body
    assert message.body.startswith(f"The client secret {acme.secret.hint}… of Acme mail sync")


def test_an_expiry_warning_on_the_last_day_says_today(acme):
    expire_in(acme, 0)
    assert warn_expiring_secrets() == 1
    [message] = mail.outbox
    assert message.subject.endswith("Acme mail sync expires today")
    assert "expires today" in message.body and "0 days" not in message.body


def test_expiry_warnings_of_several_tenants_go_in_one_batch_each_to_its_admins(
    acme, globex, silent_admin
):
    expire_in(acme, 7)
    expire_in(globex, 30)
    AppCertificate.objects.create(
        app=acme.app,
        certificate_pem="-",
        private_key="-",
        thumbprint_sha256="x",
        thumbprint_sha1="ABCDEF0123456789",
        expires_on=timezone.localdate() + timedelta(days=2),
    )
    assert warn_expiring_secrets() == 3
    by_subject = {message.subject: message.to for message in mail.outbox}
    assert by_subject == {
        "[Graphport] A client secret of Acme mail sync expires in 7 days": [acme.admin.email],
        "[Graphport] A client secret of Globex mail sync expires in 30 days": [globex.admin.email],
        "[Graphport] A certificate of Acme mail sync expires in 2 days": [acme.admin.email],
    }


def test_an_app_whose_tenant_has_no_admin_with_an_email_is_warned_about_silently(acme):
    get_user_model().objects.filter(pk=acme.admin.pk).update(email="")
    expire_in(acme, 7)
    assert warn_expiring_secrets() == 1  # the warning is recorded and not repeated
    assert mail.outbox == []
    assert warn_expiring_secrets() == 0


def test_tenant_admins_are_the_administrators_with_an_email(acme, globex, silent_admin):
    assert notices.tenant_admin_emails(acme.tenant.pk) == [acme.admin.email]
    assert notices.tenant_admin_emails(globex.tenant.pk) == [globex.admin.email]


def test_app_alerts_go_to_its_tenants_admins_only(acme, globex, silent_admin):
    notices.app_credentials_broken(acme.app, "The client secret has expired. (AADSTS7000222)")
    notices.refresh_failing(acme.connection, 5, "Microsoft's sign-in service is unavailable.")
    broken, failing = mail.outbox
    assert broken.to == failing.to == [acme.admin.email]
    assert broken.subject == "[Graphport] The credentials of Acme mail sync are broken"
    assert broken.body.startswith("The client secret has expired. (AADSTS7000222)\n\n")
    assert f"/admin/connections/entraapp/{acme.app.pk}/change/" in broken.body
    assert failing.subject == (
        f"[Graphport] Token refresh of {acme.connection} failed 5 times in a row"
    )
    assert "The last failure: Microsoft's sign-in service is unavailable." in failing.body


def test_a_single_failure_reads_in_the_singular(acme):
    notices.refresh_failing(acme.connection, 1, "Timeout")
    assert mail.outbox[0].subject.endswith("failed 1 time in a row")


def test_reconnect_notice_goes_to_the_connections_user(acme):
    notices.reconnect_needed(acme.connection, "The grant is no longer valid. (AADSTS70000)")
    [message] = mail.outbox
    assert message.to == [acme.member.email]
    assert message.subject == "[Graphport] Please reconnect your Microsoft account"
    assert message.body.startswith(
        "Graphport can no longer reach member@acme.example through Acme mail sync: "
        "The grant is no longer valid. (AADSTS70000)\n\nReconnect it here: http"
    )
    assert message.body.rstrip().endswith("/connections/")

    get_user_model().objects.filter(pk=acme.member.pk).update(email="")
    acme.connection.user.refresh_from_db()
    notices.reconnect_needed(acme.connection, "again")
    assert len(mail.outbox) == 1


def test_notices_are_plain_text_not_html_escaped(acme):
    EntraApp.objects.filter(pk=acme.app.pk).update(name='R&D <sync> "O\'Brien"')
    app = EntraApp.objects.get(pk=acme.app.pk)
    notices.app_credentials_broken(app, "Tom & Jerry's <secret>")
    [message] = mail.outbox
    assert message.subject == '[Graphport] The credentials of R&D <sync> "O\'Brien" are broken'
    assert message.body.startswith("Tom & Jerry's <secret>\n")
