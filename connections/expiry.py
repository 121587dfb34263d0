"""Warnings before client secrets expire: 30, 7 and 1 days ahead, each once."""

from __future__ import annotations

from datetime import date, timedelta

from django.conf import settings
from django.core.mail import send_mass_mail
from django.urls import reverse
from django.utils import timezone

from connections import audit
from connections.models import EXPIRY_WARNING_DAYS, AuditEvent, ClientSecret, Membership


def threshold_for(days_left: int) -> int | None:
    """The smallest warning threshold the secret is inside of, or None."""
    inside = [t for t in EXPIRY_WARNING_DAYS if 0 <= days_left <= t]
    return min(inside) if inside else None


def warn_expiring_secrets(today: date | None = None) -> int:
    today = today or timezone.localdate()
    horizon = today + timedelta(days=max(EXPIRY_WARNING_DAYS))
    due = ClientSecret.objects.filter(
        expires_on__gte=today, expires_on__lte=horizon, app__is_active=True
    ).select_related("app", "app__tenant")
    mails, warned = [], 0
    for secret in due:
        threshold = threshold_for(secret.days_left(today))
        if threshold is None or (
            secret.warned_days is not None and secret.warned_days <= threshold
        ):
            continue
        # Claim the warning first: two beat runs racing send it once.
        claimed = ClientSecret.objects.filter(pk=secret.pk, warned_days=secret.warned_days).update(
            warned_days=threshold
        )
        if not claimed:
            continue
        warned += 1
        days = secret.days_left(today)
        message = (
            f"Client secret {secret.hint}… of {secret.app.name} expires on "
            f"{secret.expires_on:%Y-%m-%d} (in {days} day{'s' if days != 1 else ''}). Create a "
            "new secret in the Azure portal and add it to the app in Graphport before then."
        )
        audit.record(AuditEvent.Kind.SECRET_EXPIRING, message, app=secret.app, days_left=days)
        link = settings.PORTAL_BASE_URL + reverse(
            "admin:connections_entraapp_change", args=[secret.app.pk]
        )
        recipients = list(
            Membership.objects.filter(tenant=secret.app.tenant, role=Membership.Role.ADMIN)
            .exclude(user__email="")
            .values_list("user__email", flat=True)
        )
        if recipients:
            subject = f"[Graphport] A client secret of {secret.app.name} expires in {days} days"
            mails.append((subject, f"{message}\n\n{link}\n", None, recipients))
    if mails:
        send_mass_mail(mails, fail_silently=False)
    return warned
