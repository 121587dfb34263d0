"""Small coloured labels for admin lists and pages."""

from __future__ import annotations

from django.utils.html import format_html

from connections.models import AppCertificate, ClientSecret

BADGE_COLOURS = {"ok": "#1a7f37", "warn": "#9a6700", "bad": "#cf222e", "none": "#57606a"}


def badge(text: str, tone: str) -> str:
    return format_html(
        '<span class="gp-badge" style="background:{};color:#fff;border-radius:8px;'
        'padding:1px 8px;white-space:nowrap">{}</span>',
        BADGE_COLOURS[tone],
        text,
    )


def secret_badge(secret: ClientSecret) -> str:
    days = secret.days_left()
    if days < 0:
        return badge(f"expired on {secret.expires_on:%Y-%m-%d}", "bad")
    if secret.expiry_state == "expiring":
        return badge(f"expires in {days} day{'s' if days != 1 else ''}", "warn")
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
