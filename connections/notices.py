"""The notices Graphport e-mails about connections and apps, and who gets each.

The wording is in templates/emails/ (rendered by core.mail); this module decides the recipients
and what goes into each notice. A tenant's administrators are its members with the
administrator role and an e-mail address; a reconnect notice goes to the connection's user.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.urls import reverse

from connections.models import (
    AppCertificate,
    ClientSecret,
    Connection,
    EntraApp,
    Membership,
    WebhookEndpoint,
)
from core import mail
from core.formatting import days_left, plural


def tenant_admin_emails(tenant_id: int) -> list[str]:
    """The e-mail addresses of a tenant's administrators (those without one are left out)."""
    return list(
        Membership.objects.filter(tenant=tenant_id, role=Membership.Role.ADMIN)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )


def _portal_url(path: str) -> str:
    return settings.PORTAL_BASE_URL + path


def _app_url(app: EntraApp) -> str:
    return _portal_url(reverse("admin:connections_entraapp_change", args=[app.pk]))


def reconnect_needed(connection: Connection, reason: str) -> None:
    """Ask the connection's user to reconnect (nothing when the user has no e-mail)."""
    user = connection.user
    if user is None or not user.email:
        return
    notice = mail.render(
        "reconnect_needed",
        {
            "account": connection.user_principal_name or "your account",
            "app": connection.app,
            "reason": reason,
            "link": _portal_url(reverse("connections:mine")),
        },
        [user.email],
    )
    mail.send(notice)


def refresh_failing(connection: Connection, streak: int, reason: str) -> None:
    """Tell the app's tenant administrators that refreshes keep failing (and are retried)."""
    notice = mail.render(
        "refresh_failing",
        {"connection": connection, "times": plural(streak, "time"), "reason": reason},
        tenant_admin_emails(connection.app.tenant_id),
    )
    mail.send(notice)


def app_credentials_broken(app: EntraApp, reason: str) -> None:
    """Tell the app's tenant administrators its credentials are broken and refreshes paused."""
    notice = mail.render(
        "app_credentials_broken",
        {"app": app, "reason": reason, "link": _app_url(app)},
        tenant_admin_emails(app.tenant_id),
    )
    mail.send(notice)


def webhook_endpoint_disabled(endpoint: WebhookEndpoint, reason: str) -> None:
    """Tell the endpoint's tenant administrators that Graphport stopped sending to it."""
    notice = mail.render(
        "webhook_disabled",
        {
            "endpoint": endpoint,
            "reason": reason,
            "link": _portal_url(
                reverse("admin:connections_webhookendpoint_change", args=[endpoint.pk])
            ),
        },
        tenant_admin_emails(endpoint.tenant_id),
    )
    mail.send(notice)


def credentials_expiring(expiring: Iterable[tuple[ClientSecret | AppCertificate, int]]) -> int:
    """Warn each credential's tenant administrators that it expires in so many days: one
    message per credential, all sent in one batch. Returns how many messages went out."""
    admins: dict[int, list[str]] = {}
    notices = []
    for credential, days in expiring:
        app = credential.app
        if app.tenant_id not in admins:
            admins[app.tenant_id] = tenant_admin_emails(app.tenant_id)
        notices.append(
            mail.render(
                "credential_expiring",
                {
                    "credential": credential,
                    "app": app,
                    "expires": days_left(days),
                    "link": _app_url(app),
                },
                admins[app.tenant_id],
            )
        )
    return mail.send_batch(notices)
