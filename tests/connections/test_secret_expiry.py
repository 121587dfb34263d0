from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from connections.expiry import threshold_for, warn_expiring_secrets
from connections.models import AuditEvent, ClientSecret

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("days", "expected"),
    [(45, None), (30, 30), (8, 30), (7, 7), (2, 7), (1, 1), (0, 1), (-1, None)],
)
def test_thresholds(days, expected):
    assert threshold_for(days) == expected


def test_each_threshold_warns_the_tenant_admins_once(acme, globex):
    today = timezone.localdate()
    ClientSecret.objects.filter(pk=acme.secret.pk).update(expires_on=today + timedelta(days=29))

    assert warn_expiring_secrets(today) == 1
    assert warn_expiring_secrets(today) == 0  # the same threshold is not repeated
    assert [m.to for m in mail.outbox] == [[acme.admin.email]]
    assert "expires in 29 days" in mail.outbox[0].subject
    assert f"/admin/connections/entraapp/{acme.app.pk}/change/" in mail.outbox[0].body

    assert warn_expiring_secrets(today + timedelta(days=23)) == 1  # 6 days left: the 7-day one
    assert warn_expiring_secrets(today + timedelta(days=28)) == 1  # 1 day left
    assert warn_expiring_secrets(today + timedelta(days=29)) == 0  # 0 days: already warned at 1
    events = AuditEvent.objects.filter(kind=AuditEvent.Kind.SECRET_EXPIRING, app=acme.app)
    assert sorted(e.data["days_left"] for e in events) == [1, 6, 29]
    assert not AuditEvent.objects.filter(app=globex.app, kind=AuditEvent.Kind.SECRET_EXPIRING)


def test_expired_and_far_secrets_are_left_alone(acme):
    today = timezone.localdate()
    ClientSecret.objects.filter(pk=acme.secret.pk).update(expires_on=today - timedelta(days=1))
    assert warn_expiring_secrets(today) == 0
    assert mail.outbox == []


def test_certificates_are_warned_about_too(acme):
    from connections.models import AppCertificate

    today = timezone.localdate()
    AppCertificate.objects.create(
        app=acme.app,
        certificate_pem="-",
        private_key="-",
        thumbprint_sha256="x",
        thumbprint_sha1="ABCDEF0123456789",
        expires_on=today + timedelta(days=6),
    )
    ClientSecret.objects.filter(pk=acme.secret.pk).update(expires_on=today + timedelta(days=300))
    assert warn_expiring_secrets(today) == 1
    assert "certificate ABCDEF01" in mail.outbox[0].body
    assert warn_expiring_secrets(today) == 0
