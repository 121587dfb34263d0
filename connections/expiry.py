"""Warnings before client secrets and certificates expire: 30, 7 and 1 days ahead, each once."""

from __future__ import annotations

from datetime import date, timedelta

from django.conf import settings
from django.core.mail import send_mass_mail
from django.urls import reverse
from django.utils import timezone

from connections import audit
from connections.models import (
    EXPIRY_WARNING_DAYS,
    AppCertificate,
    AuditEvent,
    ClientSecret,
    Membership,
)


def threshold_for(days_left: int) -> int | None:
    """The smallest warning threshold the secret is inside of, or None."""
    inside = [t for t in EXPIRY_WARNING_DAYS if 0 <= days_left <= t]
    return min(inside) if inside else None


def warn_expiring_secrets(today: date | None = None) -> int:
    """Warn about client secrets and certificates; returns how many warnings went out."""
    today = today or timezone.localdate()
    horizon = today + timedelta(days=max(EXPIRY_WARNING_DAYS))
    mails, warned = [], 0
    for model, what in ((ClientSecret, "client secret"), (AppCertificate, "certificate")):
        due = model.objects.filter(
            expires_on__gte=today, expires_on__lte=horizon, app__is_active=True
        ).select_related("app", "app__tenant")
        for credential in due:
            mail = _warn(model, credential, what, today)
            if mail is not None:
                warned += 1
                if mail[3]:
                    mails.append(mail)
    if mails:
        send_mass_mail(mails, fail_silently=False)
    return warned


def _warn(model, credential, what: str, today: date):
    days = credential.days_left(today)
    threshold = threshold_for(days)
    if threshold is None or (
        credential.warned_days is not None and credential.warned_days <= threshold
    ):
        return None
    # Claim the warning first: two beat runs racing send it once.
    claimed = model.objects.filter(pk=credential.pk, warned_days=credential.warned_days).update(
        warned_days=threshold
    )
    if not claimed:
        return None
    app = credential.app
    label = credential.hint + "…" if what == "client secret" else credential.thumbprint_sha1[:8]
    message = (
        f"The {what} {label} of {app.name} expires on {credential.expires_on:%Y-%m-%d} "
        f"(in {days} day{'s' if days != 1 else ''}). Create a new one in the Azure portal "
        "and add it to the app in Graphport before then."
    )
    audit.record(AuditEvent.Kind.SECRET_EXPIRING, message, app=app, days_left=days)
    link = settings.PORTAL_BASE_URL + reverse("admin:connections_entraapp_change", args=[app.pk])
    recipients = list(
        Membership.objects.filter(tenant=app.tenant, role=Membership.Role.ADMIN)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    subject = f"[Graphport] A {what} of {app.name} expires in {days} days"
    return (subject, f"{message}\n\n{link}\n", None, recipients)
