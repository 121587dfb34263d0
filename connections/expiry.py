"""Warnings before client secrets and certificates expire: 30, 7 and 1 days ahead, each once."""

from __future__ import annotations

from datetime import date, timedelta

from django.db import transaction
from django.utils import timezone

from connections import audit, notices, webhook_events
from connections.models import (
    EXPIRY_WARNING_DAYS,
    SECRET_WARNING_DAYS,
    AppCertificate,
    AuditEvent,
    ClientSecret,
)
from core.formatting import plural


def threshold_for(days_left: int) -> int | None:
    """The smallest warning threshold the secret is inside of, or None."""
    inside = [t for t in EXPIRY_WARNING_DAYS if 0 <= days_left <= t]
    return min(inside) if inside else None


def warn_expiring_secrets(today: date | None = None) -> int:
    """Warn about client secrets and certificates; returns how many warnings went out."""
    today = today or timezone.localdate()
    horizon = today + timedelta(days=SECRET_WARNING_DAYS)
    expiring = []
    for model in (ClientSecret, AppCertificate):
        due = model.objects.filter(
            expires_on__gte=today, expires_on__lte=horizon, app__is_active=True
        ).select_related("app", "app__tenant")
        for credential in due:
            days = _claim(model, credential, today)
            if days is not None:
                expiring.append((credential, days))
    if expiring:
        notices.credentials_expiring(expiring)
    return len(expiring)


def _claim(model, credential, today: date) -> int | None:
    """The days left if this credential's warning is due now and this run claimed it."""
    days = credential.days_left(today)
    threshold = threshold_for(days)
    if threshold is None or (
        credential.warned_days is not None and credential.warned_days <= threshold
    ):
        return None
    # Claim the warning first: two beat runs racing send it once, and its event with it.
    with transaction.atomic():
        claimed = model.objects.filter(pk=credential.pk, warned_days=credential.warned_days).update(
            warned_days=threshold
        )
        if not claimed:
            return None
        webhook_events.credential_expiring(credential, days)
    app = credential.app
    audit.record(
        AuditEvent.Kind.SECRET_EXPIRING,
        f"The {credential.noun} {credential.short_label} of {app.name} expires on "
        f"{credential.expires_on:%Y-%m-%d} (in {plural(days, 'day')}). Create a new one in the "
        "Azure portal and add it to the app in Graphport before then.",
        app=app,
        days_left=days,
    )
    return days
