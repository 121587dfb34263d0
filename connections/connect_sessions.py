"""Connect sessions: a customer's backend connects one of its own end users.

The backend asks for a session (the app, its end user's id, where to come back to) and gets a
single-use link, valid for `ConnectSession.LIFETIME_SECONDS`. The browser that opens it goes
straight to Microsoft's sign-in; the attempt is bound to that browser (its session), since the end
user has no Graphport login to bind it to. The callback stores the connection with the end
user's id and sends the browser to the return URL with the outcome. The return URL must be on an
origin the tenant's administrator allowed, so a link can never become an open redirect.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from urllib.parse import urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from connections import audit
from connections.apikeys import digest
from connections.models import ApiKey, AuditEvent, Connection, ConnectSession, EntraApp, Tenant

TOKEN_START = "gcs_"


class Unusable(Exception):
    """The link is unknown, expired or already used."""


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) URL, lower-cased; None otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    default = {"https": 443, "http": 80}[parts.scheme]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def origin_problem(value: str) -> str | None:
    """Why `value` is not an origin an administrator may allow, or None."""
    origin = origin_of(value)
    if origin is None:
        return f"{value!r} is not an origin such as https://app.example.com."
    if urlsplit(value).path not in ("", "/") or urlsplit(value).query:
        return f"{value!r} has a path or query: an origin is scheme, host and port only."
    local = urlsplit(value).hostname in ("localhost", "127.0.0.1", "::1")
    if origin.startswith("http://") and not (local or settings.DEBUG):
        return f"{value!r} is plain http://: only https:// (or localhost in development)."
    return None


def return_url_problem(tenant: Tenant, url: str) -> str | None:
    """Why the browser may not be sent to `url` at the end of a session of `tenant`, or None."""
    if len(url) > 2000:
        return "The return URL is longer than 2,000 characters."
    origin = origin_of(url)
    if origin is None:
        return "The return URL must be an absolute http(s) URL without user info."
    allowed = {origin_of(o) for o in tenant.return_origin_list}
    if origin not in allowed:
        return (
            f"{origin} is not an allowed return origin of this tenant: a tenant administrator "
            "adds it under Allowed return origins in the admin."
        )
    return None


def create(
    key: ApiKey,
    app: EntraApp,
    *,
    end_user_id: str,
    end_user_email: str = "",
    end_user_name: str = "",
    return_url: str,
) -> tuple[ConnectSession, str]:
    """A new session and its link. The caller has checked the fields (the API's serializer)."""
    raw = TOKEN_START + secrets.token_urlsafe(32)
    now = timezone.now()
    session = ConnectSession.objects.create(
        tenant=key.tenant,
        app=app,
        api_key=key,
        token_hash=digest(raw),
        end_user_id=end_user_id,
        end_user_email=end_user_email,
        end_user_name=end_user_name,
        return_url=return_url,
        created_at=now,
        expires_at=now + timedelta(seconds=ConnectSession.LIFETIME_SECONDS),
    )
    audit.record(
        AuditEvent.Kind.CONNECT_SESSION,
        f"Connect session for end user {end_user_id} with {app.name}.",
        app=app,
        api_key=key.prefix,
        end_user_id=end_user_id,
    )
    return session, link(raw)


def link(raw: str) -> str:
    return settings.PORTAL_BASE_URL + reverse("connections:session", args=[raw])


def open_link(raw: str) -> ConnectSession:
    """The session behind a link, marked opened so the link works once; Unusable otherwise."""
    session = (
        ConnectSession.objects.select_related("app", "tenant")
        .filter(token_hash=digest(raw))
        .first()
        if raw.startswith(TOKEN_START) and len(raw) < 100
        else None
    )
    if session is None:
        raise Unusable("This connect link is not known.")
    now = timezone.now()
    if session.expires_at <= now:
        raise Unusable("This connect link has expired.")
    if not session.app.is_active:
        raise Unusable("The app of this connect link is switched off.")
    opened = ConnectSession.objects.filter(pk=session.pk, opened_at__isnull=True).update(
        opened_at=now
    )
    if not opened:
        raise Unusable("This connect link was already used: links work once.")
    return session


def finish(session: ConnectSession, connection: Connection | None, error: str = "") -> str:
    """Record the outcome; the URL that takes the browser back to the customer with it."""
    session.outcome = ConnectSession.Outcome.FAILED if error else ConnectSession.Outcome.CONNECTED
    session.error = error[:100]
    session.connection = connection
    session.save(update_fields=["outcome", "error", "connection"])
    query = {"connect_session": session.pk, "outcome": session.outcome}
    if connection is not None:
        query["connection"] = connection.pk
    if error:
        query["error"] = error
    parts = urlsplit(session.return_url)
    joined = f"{parts.query}&{urlencode(query)}" if parts.query else urlencode(query)
    return urlunsplit(parts._replace(query=joined))
