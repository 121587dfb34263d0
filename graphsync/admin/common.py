"""What the sync admin pages share."""

from __future__ import annotations

from django.urls import reverse
from django.utils.html import format_html


def changelist_link(model: str, text: str, **filters: int) -> str:
    query = "&".join(f"{key}={value}" for key, value in filters.items())
    return format_html(
        '<a href="{}?{}">{}</a>', reverse(f"admin:graphsync_{model}_changelist"), query, text
    )
