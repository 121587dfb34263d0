"""What the sync admin pages share."""

from __future__ import annotations

from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator


def short(text: str, length: int = 80) -> str:
    return Truncator(text).chars(length) if text else "—"


def changelist_link(model: str, text: str, **filters: int) -> str:
    query = "&".join(f"{key}={value}" for key, value in filters.items())
    return format_html(
        '<a href="{}?{}">{}</a>', reverse(f"admin:graphsync_{model}_changelist"), query, text
    )


class TenantFilterForOperators:
    """Only operators see every tenant; a tenant administrator's lists hold one already."""

    def get_list_filter(self, request):
        filters = list(super().get_list_filter(request))
        return ["tenant", *filters] if request.user.is_superuser else filters
