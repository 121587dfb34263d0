"""Badges for credentials: how a secret or certificate stands."""

from __future__ import annotations

from django.utils.html import format_html

from connections.models import AppCertificate, ClientSecret
from core.formatting import badge, days_left


def secret_badge(secret: ClientSecret) -> str:
    days = secret.days_left()
    if days < 0:
        return badge(f"expired on {secret.expires_on:%Y-%m-%d}", "bad")
    if secret.expiry_state == "expiring":
        return badge(days_left(days), "warn")
    return badge(f"set, expires on {secret.expires_on:%Y-%m-%d}", "ok")


def verification_badge(obj: ClientSecret | AppCertificate) -> str:
    if obj.verification_ok is None:
        return "not verified"
    works = bool(obj.verification_ok)
    return format_html(
        "{} {}",
        badge("works" if works else "fails", "ok" if works else "bad"),
        obj.verification_detail,
    )
