"""The connect and admin-consent flows (architecture flows 1 and 2), apart from HTTP.

`start_*` records an authorization attempt and returns where to send the browser; `complete`
takes the callback's parameters and either stores a connection or raises `FlowError`, which
says what happened and what to do, and leaves nothing half-written.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from connections import (
    audit,
    credentials,
    identity,
    idtoken,
    kept_answers,
    signals,
    tokens,
    webhook_events,
)
from connections.clouds import is_guid
from connections.identity import FailureClass, IdentityError, SignInProblem
from connections.models import (
    AuditEvent,
    AuthorizationAttempt,
    Connection,
    ConnectSession,
    EntraApp,
    EventType,
)
from connections.scopes import OIDC_SCOPES
from core import logs

logger = logging.getLogger(__name__)


@dataclass
class FlowError(Exception):
    """A callback that ends without a connection. `kind` picks the page's advice."""

    kind: str  # bad_state | cancelled | consent | redirect_uri | mfa | login | no_refresh_token |
    #             invalid_id_token | already_connected | app_credentials | code_used | other
    message: str
    code: str = ""
    trace_id: str = ""
    description: str = ""
    status: int = 400
    app: EntraApp | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.message


def _new_attempt(
    user, app: EntraApp, kind: str, return_path: str, session: ConnectSession | None = None
) -> AuthorizationAttempt:
    now = timezone.now()
    code_flow = kind == AuthorizationAttempt.Kind.CONNECT
    return AuthorizationAttempt.objects.create(
        state=secrets.token_urlsafe(32),  # 256 bits
        code_verifier=secrets.token_urlsafe(64) if code_flow else "",  # 86 chars (43 to 128)
        nonce=secrets.token_urlsafe(24) if code_flow else "",
        kind=kind,
        user=user,
        connect_session=session,
        app=app,
        return_path=return_path,
        created_at=now,
        expires_at=now + timedelta(seconds=AuthorizationAttempt.LIFETIME_SECONDS),
    )


def start_connect(user, app: EntraApp, return_path: str = "/", prompt: str | None = None) -> str:
    attempt = _new_attempt(user, app, AuthorizationAttempt.Kind.CONNECT, return_path)
    return _authorization_url(app, attempt, prompt)


def start_session_connect(session: ConnectSession) -> tuple[str, str]:
    """The attempt's `state` (for the browser to keep) and where to send the browser, for a
    connect session's end user (connections.connect_sessions)."""
    attempt = _new_attempt(None, session.app, AuthorizationAttempt.Kind.CONNECT, "/", session)
    return attempt.state, _authorization_url(session.app, attempt, None)


def _authorization_url(app: EntraApp, attempt: AuthorizationAttempt, prompt: str | None) -> str:
    return identity.authorization_url(
        app.authorize_url,
        app.client_id,
        app.redirect_uri,
        app.requested_scopes,
        attempt.state,
        attempt.code_verifier,
        nonce=attempt.nonce,
        prompt=prompt if prompt is not None else app.default_prompt,
        response_mode=app.response_mode,
    )


class AdminConsentNotOffered(PermissionDenied):
    """Admin consent asked for an app that has no application permissions: it would grant
    nothing Graphport uses, and store an app-only connection syncing what was never wanted."""


def _needs_application_permissions(app: EntraApp) -> str | None:
    if app.use_application_permissions:
        return None
    return (
        f"{app.name} has no application permissions, so it has no admin consent to grant: "
        "tick Application permissions on the app registration first."
    )


def start_admin_consent(user, app: EntraApp, return_path: str = "/") -> str:
    refusal = _needs_application_permissions(app)
    if refusal:
        raise AdminConsentNotOffered(refusal)
    attempt = _new_attempt(user, app, AuthorizationAttempt.Kind.ADMIN_CONSENT, return_path)
    query = urlencode(
        {
            "client_id": app.client_id,
            "scope": app.app_only_scope,
            "redirect_uri": app.redirect_uri,
            "state": attempt.state,
        }
    )
    return f"{app.admin_consent_url}?{query}"


# --- the callback ------------------------------------------------------------------------------

_AADSTS = re.compile(r"^AADSTS(\d+)")


def claim(user, state: str, browser_states: frozenset[str]) -> AuthorizationAttempt:
    """The pending attempt named by `state`, marked used so it can never be used again. A
    member's attempt must come back to the member who started it; a connect session's, which
    has no member, to the browser that opened the session (`browser_states`)."""
    attempt = (
        AuthorizationAttempt.objects.select_related("app", "app__tenant", "connect_session")
        .filter(state=state)
        .first()
        if state
        else None
    )
    if attempt is None:
        owner_matches = False
    elif (
        attempt.connect_session_id is not None or attempt.kind == AuthorizationAttempt.Kind.SIGN_IN
    ):
        # Nobody is signed in yet: the browser that started it must be the one coming back.
        owner_matches = state in browser_states
    else:
        owner_matches = user is not None and user.is_authenticated and attempt.user_id == user.pk
    if not owner_matches:
        raise FlowError("bad_state", "This sign-in link is unknown or belongs to someone else.")
    if attempt.used_at is not None:
        raise FlowError("bad_state", "This sign-in was already completed: it can be used once.")
    if attempt.expires_at <= timezone.now():
        raise FlowError("bad_state", "This sign-in took longer than ten minutes and expired.")
    claimed = AuthorizationAttempt.objects.filter(pk=attempt.pk, used_at__isnull=True).update(
        used_at=timezone.now()
    )
    if not claimed:  # a concurrent request with the same state won
        raise FlowError("bad_state", "This sign-in was already completed: it can be used once.")
    return attempt


def authorize_error(params: dict[str, str], app: EntraApp) -> FlowError:
    error = params.get("error", "")
    description = params.get("error_description", "")
    # The authorize redirect carries no error_codes: the AADSTS number that starts
    # error_description is the only code there is, so it refines what `error` says.
    match = _AADSTS.match(description)
    code = int(match.group(1)) if match else None
    problem = identity.sign_in_problem(code)
    trace = re.search(r"Trace ID: ([0-9a-fA-F-]+)", description)
    common = {
        "code": f"AADSTS{code}" if code else error,
        "trace_id": trace.group(1) if trace else "",
        "description": description,
        "app": app,
    }
    if problem == SignInProblem.REDIRECT_URI:
        return FlowError(
            "redirect_uri", "The app's redirect URI is not registered in Azure.", **common
        )
    if problem == SignInProblem.CONSENT or error == "consent_required":
        return FlowError("consent", "Permission to these data needs consent first.", **common)
    if error == "access_denied" or problem == SignInProblem.DECLINED:
        return FlowError("cancelled", "You cancelled the sign-in; nothing was connected.", **common)
    if error == "login_required":
        return FlowError(
            "login",
            "Microsoft needs you to sign in interactively; the app asked for a silent sign-in "
            "(prompt=none) and there was no Microsoft session to use.",
            **common,
        )
    if problem == SignInProblem.MFA or error == "interaction_required":
        return FlowError(
            "mfa",
            "Your organisation requires another step (multi-factor authentication or a "
            "Conditional Access policy) that this sign-in did not complete.",
            **common,
        )
    return FlowError("other", "Microsoft could not complete the sign-in.", **common)


def token_error(exc: IdentityError, app: EntraApp) -> FlowError:
    common = {
        "code": exc.aadsts,
        "trace_id": exc.trace_id,
        "description": exc.description,
        "app": app,
    }
    problem = identity.sign_in_problem(exc.code)
    if problem == SignInProblem.CODE_USED:
        return FlowError("code_used", "This sign-in code was already used.", **common)
    if problem == SignInProblem.REDIRECT_URI:
        return FlowError("redirect_uri", "The app's redirect URI does not match Azure's.", **common)
    klass = exc.failure_class
    if klass == FailureClass.APP_CREDENTIALS:
        return FlowError("app_credentials", exc.explanation, **common)
    if klass == FailureClass.CONSENT:
        return FlowError("consent", exc.explanation, **common)
    if problem == SignInProblem.MFA:
        return FlowError("mfa", exc.explanation, **common)
    if klass == FailureClass.TRANSIENT:
        return FlowError("other", exc.explanation, status=503, **common)
    return FlowError("other", exc.explanation, **common)


def _fail(attempt: AuthorizationAttempt, error: FlowError, user) -> FlowError:
    attempt.outcome = (
        AuthorizationAttempt.Outcome.CANCELLED
        if error.kind == "cancelled"
        else AuthorizationAttempt.Outcome.FAILED
    )
    attempt.error = error.kind
    attempt.error_code = error.code[:20]
    attempt.error_description = error.description or error.message
    attempt.trace_id = error.trace_id[:64]
    attempt.save(update_fields=["outcome", "error", "error_code", "error_description", "trace_id"])
    kind = (
        AuditEvent.Kind.CONSENT_FAILED
        if attempt.kind == AuthorizationAttempt.Kind.ADMIN_CONSENT
        else AuditEvent.Kind.CONNECT_FAILED
    )
    audit.record(
        kind,
        f"{error.message} {error.code}".strip(),
        app=attempt.app,
        actor=user,
        reason=error.kind,
        trace_id=error.trace_id,
    )
    return error


def attempt_for(state: str) -> AuthorizationAttempt | None:
    """The attempt `state` names, if any (with its connect session)."""
    if not state:
        return None
    return (
        AuthorizationAttempt.objects.select_related("connect_session").filter(state=state).first()
    )


def complete(
    user, params: dict[str, str], browser_states: frozenset[str] = frozenset()
) -> tuple[AuthorizationAttempt, Connection]:
    attempt = claim(user, params.get("state", ""), browser_states)
    if attempt.connect_session_id is not None:
        user = None  # the end user's, not whoever may be signed in to Graphport
    app = attempt.app
    try:
        if params.get("error"):
            raise authorize_error(params, app)
        if attempt.kind == AuthorizationAttempt.Kind.ADMIN_CONSENT:
            connection = _complete_admin_consent(attempt, params, user)
        else:
            connection = _complete_connect(attempt, params, user)
    except FlowError as error:
        raise _fail(attempt, error, user) from None
    attempt.outcome = AuthorizationAttempt.Outcome.SUCCEEDED
    attempt.connection = connection
    attempt.save(update_fields=["outcome", "connection"])
    announce(connection)
    return attempt, connection


def announce(connection: Connection) -> None:
    """Tell the listeners a connection was stored. What they do next (create sync jobs, enqueue
    the first runs) must not turn that into an error page: a listener's failure is logged; the
    jobs are due, and beat starts them."""
    for receiver, failure in signals.connected.send_robust(
        sender=Connection, connection=connection
    ):
        if isinstance(failure, Exception):
            logger.error(
                "connection %s stored, but %r failed on it",
                connection.pk,
                receiver,
                exc_info=failure,
            )


def with_each_credential(app: EntraApp, token_url: str, call):
    try:
        return credentials.with_each(app, token_url, call)
    except credentials.NoCredential as exc:
        raise FlowError("app_credentials", exc.description, app=app) from None
    except IdentityError as exc:
        raise token_error(exc, app) from None


def _complete_connect(attempt: AuthorizationAttempt, params: dict[str, str], user) -> Connection:
    app = attempt.app
    code = params.get("code", "")
    if not code:
        raise FlowError("other", "Microsoft's answer carried no authorization code.", app=app)
    token = with_each_credential(
        app,
        app.token_url,
        lambda credential: identity.exchange_code(
            app.token_url, app.client_id, credential, code, app.redirect_uri, attempt.code_verifier
        ),
    )
    if not token.get("refresh_token"):
        raise FlowError(
            "no_refresh_token",
            "Microsoft granted no refresh token: offline_access was not granted, so the "
            "connection would die within the hour. Add offline_access to the app's API "
            "permissions in Azure and connect again.",
            app=app,
        )
    try:
        who = idtoken.validate(app, token.get("id_token", ""), attempt.nonce)
    except idtoken.InvalidIdToken as exc:
        raise FlowError(
            "invalid_id_token", f"The sign-in could not be verified: {exc}.", app=app
        ) from None
    return store_connection(app, user, who, token, attempt.connect_session)


def store_connection(
    app: EntraApp,
    user,
    who: idtoken.Identity,
    token: dict,
    session: ConnectSession | None = None,
) -> Connection:
    now = timezone.now()
    with transaction.atomic():
        connection = (
            Connection.objects.select_for_update()
            .filter(app=app, ms_tenant_id=who.tenant_id, ms_object_id=who.object_id)
            .first()
        )
        if (
            connection is not None
            and _owner(connection) not in (None, _owner_of(user, session))
            and connection.status != Connection.Status.REVOKED
        ):
            raise FlowError(
                "already_connected",
                f"The Microsoft account {who.username or who.object_id} is already connected "
                f"by another {_owner(connection)[0]} of your organisation. Ask them to "
                "disconnect it first.",
                app=app,
            )
        created = connection is None
        connection = connection or Connection(
            app=app, ms_tenant_id=who.tenant_id, ms_object_id=who.object_id
        )
        connection.user = user
        connection.end_user_id = session.end_user_id if session else ""
        connection.end_user_email = session.end_user_email if session else ""
        connection.end_user_name = session.end_user_name if session else ""
        connection.kind = Connection.Kind.DELEGATED
        connection.display_name = who.name[:256]
        connection.user_principal_name = who.username[:256]
        connection.email = who.email[:256]
        _apply_token(connection, token, now)
        connection.save()
        audit.record(
            AuditEvent.Kind.CONNECTED,
            f"{'Connected' if created else 'Reconnected'} {who.username or who.object_id}.",
            connection=connection,
            actor=user,
            granted_scopes=connection.granted_scopes,
        )
        webhook_events.connection_stored(connection, created)
    _log_stored(connection, created)
    return connection


def _log_stored(connection: Connection, created: bool) -> None:
    logs.bind(tenant_id=connection.app.tenant_id, connection_id=connection.pk)
    logger.info(
        "%s connection %s %s through app %s",
        connection.kind,
        connection.pk,
        "stored" if created else "stored again",
        connection.app_id,
    )


def _owner(connection: Connection) -> tuple[str, object] | None:
    """Whose a connection is: a member's, or a customer end user's (a connect session)."""
    if connection.user_id is not None:
        return ("member", connection.user_id)
    if connection.end_user_id:
        return ("user", connection.end_user_id)
    return None


def _owner_of(user, session: ConnectSession | None) -> tuple[str, object]:
    return ("user", session.end_user_id) if session else ("member", user.pk)


def _apply_token(connection: Connection, token: dict, now) -> None:
    for name, value in tokens.token_fields(token, now).items():
        setattr(connection, name, value)


def missing_scopes(app: EntraApp, granted_scopes: str) -> list[str]:
    """Requested scopes Microsoft did not grant (offline_access is never listed by Microsoft,
    so its absence is not reported; a refresh token proves it)."""
    graph_prefix = app.hosts.graph.lower() + "/"
    granted = {s.lower().removeprefix(graph_prefix) for s in granted_scopes.split()}
    return [
        s
        for s in app.scope_list
        if s.lower() not in OIDC_SCOPES and s.lower().removeprefix(graph_prefix) not in granted
    ]


# --- admin consent -------------------------------------------------------------------------------


# A DNS label: letters, digits and inner hyphens, 63 characters at most.
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def is_dns_domain(value: str) -> bool:
    """A domain name and nothing else: ASCII labels joined by dots, at least two, 253
    characters in all, a top-level label not all digits (`contoso.onmicrosoft.com`). No
    slash, dot segment, query, fragment, port, space or trailing dot gets through."""
    if not value or len(value) > 253 or not value.isascii():
        return False
    labels = value.lower().split(".")
    return (
        len(labels) >= 2
        and all(_DNS_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


def _consented_tenant(params: dict[str, str], app: EntraApp) -> str:
    """The tenant the redirect names, if it is a tenant at all: it goes into the token URL
    and is stored as the connection's tenant, so only a GUID or a domain name is accepted
    (docs/microsoft.md, "Admin consent")."""
    tenant = params.get("tenant", "")
    if is_guid(tenant) or is_dns_domain(tenant):
        return tenant.lower()
    raise FlowError(
        "other",
        "Microsoft's answer named no valid tenant (a directory GUID or domain name was "
        "expected), so the consent could not be checked. Nothing was stored; grant admin "
        "consent again.",
        description=f"tenant={tenant[:200]!r}",
        app=app,
    )


def _complete_admin_consent(
    attempt: AuthorizationAttempt, params: dict[str, str], user
) -> Connection:
    app = attempt.app
    refusal = _needs_application_permissions(app)
    if refusal:
        raise FlowError("other", refusal, app=app)
    if params.get("admin_consent", "").lower() != "true" or not params.get("tenant"):
        raise FlowError("other", "Microsoft's answer did not confirm admin consent.", app=app)
    tenant_id = _consented_tenant(params, app)
    pinned = app.credential_tenant if is_guid(app.credential_tenant or "") else None
    if pinned and pinned != tenant_id:
        raise FlowError(
            "other",
            f"Consent came from tenant {tenant_id}, not the app's tenant {pinned}.",
            app=app,
        )
    # Never trust `tenant` from the redirect alone (docs/microsoft.md, "Admin consent"): a token
    # request proves it.
    token_url = app.token_url_for(tenant_id)
    token = with_each_credential(
        app,
        token_url,
        lambda credential: identity.app_token(
            token_url, app.client_id, credential, app.app_only_scope
        ),
    )
    now = timezone.now()
    with transaction.atomic():
        connection, created = Connection.objects.select_for_update().get_or_create(
            app=app,
            ms_tenant_id=tenant_id,
            ms_object_id="",
            defaults={"kind": Connection.Kind.APPLICATION, "user": user},
        )
        connection.kind = Connection.Kind.APPLICATION
        connection.display_name = f"{app.name} (app-only)"
        _apply_token(connection, token, now)
        if token.get("roles") is None:  # a token we cannot read: what the consent said
            connection.granted_scopes = params.get("scope") or app.app_only_scope
        connection.save()
        audit.record(
            AuditEvent.Kind.CONSENT_GRANTED,
            f"Admin consent granted in tenant {tenant_id} and verified with a token request.",
            connection=connection,
            actor=user,
        )
        webhook_events.connection_stored(connection, created)
    _log_stored(connection, created)
    return connection


# --- disconnect ----------------------------------------------------------------------------------


def disconnect(connection: Connection, user) -> None:
    """Delete the tokens (no ciphertext is left), keep the row and its history."""
    # First, so that what was set up at Microsoft with these tokens can still be taken down.
    signals.disconnecting.send(sender=Connection, connection=connection)
    with transaction.atomic():
        Connection.objects.filter(pk=connection.pk).update(
            access_token=None,
            refresh_token=None,
            access_token_expires_at=None,
            status=Connection.Status.REVOKED,
            status_reason=f"Disconnected by {user} on {timezone.now():%Y-%m-%d %H:%M} UTC.",
            updated_at=timezone.now(),
        )
        audit.record(
            AuditEvent.Kind.DISCONNECTED,
            f"Disconnected {connection.user_principal_name or connection.ms_object_id}.",
            connection=connection,
            actor=user,
        )
        connection.status = Connection.Status.REVOKED
        webhook_events.connection_event(EventType.CONNECTION_DISCONNECTED, connection)
        signals.disconnected.send(sender=Connection, connection=connection)
    kept_answers.forget(connection.pk)  # a kept token answer must not outlive them
