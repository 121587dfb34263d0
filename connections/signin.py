"""Sign in with Microsoft (docs/architecture.md, "Signing in"): the OpenID Connect code flow with
PKCE, state and nonce through the connect flow's machinery (connections.connect), the ID token
validated as for a connection (connections.idtoken), and people found by (`tid`, `oid`) only.

`start` records a single-use attempt bound to the browser and returns where to send it;
`complete` takes the callback's parameters and returns who signed in, or raises the connect
flow's `FlowError`, having created nothing. Who may come in:

- a login already linked to this Microsoft account (MicrosoftIdentity);
- the holder of an invitation (connections.invitations), checked against the account's e-mail
  or user name unless the tenant accepts any account;
- anyone from a tenant's verified directory, as a member, when the tenant lets them join.

Everyone else is refused, and nothing is written but the failed attempt.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from connections import audit, connect, identity, idtoken, invitations, logins
from connections.clouds import NATIONAL_CLOUDS, Cloud
from connections.connect import FlowError
from connections.identity import IdentityError
from connections.models import (
    AuditEvent,
    AuthorizationAttempt,
    Connection,
    EntraApp,
    Invitation,
    Membership,
    MicrosoftIdentity,
    Tenant,
)

logger = logging.getLogger(__name__)

#: Set in the session when a Microsoft sign-in's ID token said multi-factor (`amr` holds
#: "mfa"): that sign-in counts as the second factor (portal.twofactor).
MICROSOFT_MFA_SESSION_KEY = "graphport.signin.microsoft_mfa"

# What a sign-in alone asks for: who the person is, nothing of their data.
SIGN_IN_SCOPES = ["openid", "profile", "email"]


class NotOffered(Exception):
    """Sign in with Microsoft is not available here (no platform app, an inactive app)."""


@dataclass
class SignedIn:
    user: object
    tenant: Tenant | None
    strong: bool  # Microsoft reported multi-factor authentication (`amr`)
    return_path: str
    joined: bool = False
    linked: bool = False
    accepted: bool = False  # an invitation
    connection: Connection | None = None
    connect_problem: str = ""


# --- which app signs people in ------------------------------------------------------------------


def platform_app() -> EntraApp | None:
    """The operator's own sign-in app (settings.SIGNIN_*), as an unsaved app registration so the
    connect flow's URLs and ID-token checks apply unchanged; None when it is not configured."""
    if not settings.SIGNIN_CLIENT_ID:
        return None
    login = settings.SIGNIN_LOGIN_URL
    cloud = next((c for c, hosts in NATIONAL_CLOUDS.items() if hosts.login == login), None)
    app = EntraApp(
        name="Graphport sign-in",
        client_id=settings.SIGNIN_CLIENT_ID,
        authority=settings.SIGNIN_AUTHORITY,
        cloud=cloud or Cloud.CUSTOM,
    )
    if cloud is None:  # a sovereign or local login host; Graph is never called for a sign-in
        app.login_base_url = app.graph_base_url = login
    return app


def app_for(tenant: Tenant | None) -> EntraApp | None:
    """The app that signs in people of `tenant` (its own when it chose one), else the platform's."""
    if tenant is not None and tenant.signin_app_id:
        app = tenant.signin_app
        if app is not None and app.is_active and app.tenant_id == tenant.pk:
            return app
    return platform_app()


def _credential_call(attempt_app: EntraApp | None, app: EntraApp, call):
    if attempt_app is None:  # the platform app: its secret is in the settings
        try:
            return call({"client_secret": settings.SIGNIN_CLIENT_SECRET})
        except IdentityError as exc:
            raise connect.token_error(exc, app) from None
    return connect.with_each_credential(app, app.token_url, call)


# --- start ----------------------------------------------------------------------------------------


def start(
    app: EntraApp | None,
    *,
    return_path: str = "/",
    invitation: Invitation | None = None,
    connect_too: bool = False,
    link_to=None,
) -> tuple[str, str]:
    """The attempt's `state` (for the browser to keep) and Microsoft's authorize URL. `app` None
    is the platform app; `connect_too` asks for the app's sync scopes as well, so one consent
    signs the member in and connects the account; `link_to` adds the account to a signed-in
    login instead of signing anyone in."""
    saved = app if app is not None and app.pk else None
    app = saved or platform_app()
    if app is None:
        raise NotOffered("Sign in with Microsoft is not configured on this portal.")
    now = timezone.now()
    attempt = AuthorizationAttempt.objects.create(
        state=secrets.token_urlsafe(32),
        code_verifier=secrets.token_urlsafe(64),
        nonce=secrets.token_urlsafe(24),
        kind=AuthorizationAttempt.Kind.SIGN_IN,
        user=link_to,
        app=saved,
        invitation=invitation,
        connect_too=bool(connect_too and saved),
        return_path=return_path,
        created_at=now,
        expires_at=now + timedelta(seconds=AuthorizationAttempt.LIFETIME_SECONDS),
    )
    scopes = saved.requested_scopes if attempt.connect_too else SIGN_IN_SCOPES
    url = identity.authorization_url(
        app.authorize_url,
        app.client_id,
        app.redirect_uri,
        scopes,
        attempt.state,
        attempt.code_verifier,
        nonce=attempt.nonce,
        prompt="select_account",
        response_mode=EntraApp.ResponseMode.FORM_POST,
    )
    return attempt.state, url


# --- complete ---------------------------------------------------------------------------------


def complete(params: dict[str, str], browser_states: frozenset[str], current_user=None) -> SignedIn:
    """Who signed in, with what; `current_user` is whoever is signed in to Graphport in this
    browser (a link to a login must come back to that login)."""
    attempt = connect.claim(None, params.get("state", ""), browser_states)
    linking_someone_else = attempt.user_id is not None and (
        current_user is None or current_user.pk != attempt.user_id
    )
    if attempt.kind != AuthorizationAttempt.Kind.SIGN_IN or linking_someone_else:
        raise FlowError("bad_state", "This sign-in link is unknown or belongs to someone else.")
    app = attempt.app or platform_app()
    if app is None:
        raise FlowError("bad_state", "Sign in with Microsoft is no longer configured here.")
    try:
        if params.get("error"):
            raise connect.authorize_error(params, app)
        token, who = _redeem(attempt, app, params)
        result = _admit(attempt, who)
        if attempt.connect_too and result.tenant == attempt.app.tenant:
            _connect(result, attempt.app, who, token)
    except FlowError as error:
        raise _refused(attempt, error) from None
    attempt.outcome = AuthorizationAttempt.Outcome.SUCCEEDED
    attempt.connection = result.connection
    attempt.save(update_fields=["outcome", "connection"])
    if result.connection is not None:
        connect.announce(result.connection)
    return result


def _redeem(attempt: AuthorizationAttempt, app: EntraApp, params: dict[str, str]):
    code = params.get("code", "")
    if not code:
        raise FlowError("other", "Microsoft's answer carried no authorization code.", app=app)
    token = _credential_call(
        attempt.app,
        app,
        lambda credential: identity.exchange_code(
            app.token_url, app.client_id, credential, code, app.redirect_uri, attempt.code_verifier
        ),
    )
    try:
        who = idtoken.validate(app, token.get("id_token", ""), attempt.nonce)
    except idtoken.InvalidIdToken as exc:
        raise FlowError(
            "invalid_id_token", f"The sign-in could not be verified: {exc}.", app=app
        ) from None
    return token, who


def _refused(attempt: AuthorizationAttempt, error: FlowError) -> FlowError:
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
    tenant = attempt.app.tenant if attempt.app else None
    tenant = tenant or (attempt.invitation.tenant if attempt.invitation else None)
    if tenant is not None:  # a platform sign-in of nobody in particular belongs to no tenant
        audit.record(
            AuditEvent.Kind.SIGN_IN_REFUSED,
            error.message,
            tenant=tenant,
            reason=error.kind,
            trace_id=error.trace_id,
        )
    return error


# --- who comes in ---------------------------------------------------------------------------------


def _admit(attempt: AuthorizationAttempt, who: idtoken.Identity) -> SignedIn:
    strong = "mfa" in (who.claims.get("amr") or ())
    try:
        with transaction.atomic():
            known = (
                MicrosoftIdentity.objects.select_for_update(of=("self",))
                .select_related("user", "user__membership__tenant")
                .filter(ms_tenant_id=who.tenant_id, ms_object_id=who.object_id)
                .first()
            )
            if attempt.user_id is not None:
                user, tenant, joined = _link(attempt, who, known), None, False
            elif attempt.invitation_id is not None:
                user, tenant = invitations.accept_signed_in(attempt.invitation_id, who, known)
                joined = known is None
            elif known is not None:
                user, tenant, joined = _returning(attempt, known), None, False
            else:
                user, tenant, joined = _join(attempt, who), None, True
            _remember(user, who, known)
    except IntegrityError:  # the same account's first sign-in in two tabs: the other won
        raise FlowError(
            "other", "This Microsoft account was being signed in twice at once: sign in again."
        ) from None
    membership = getattr(user, "membership", None)
    tenant = tenant or (membership.tenant if membership else None)
    if tenant is not None:
        audit.record(
            AuditEvent.Kind.SIGNED_IN,
            f"{user} signed in with Microsoft as {who.username or who.object_id}"
            f"{' (multi-factor)' if strong else ''}.",
            tenant=tenant,
            actor=user,
            ms_tenant_id=who.tenant_id,
        )
    linked = attempt.user_id is not None and known is None
    return SignedIn(
        user,
        tenant,
        strong,
        attempt.return_path,
        joined=joined,
        linked=linked,
        accepted=attempt.invitation_id is not None,
    )


def _remember(user, who: idtoken.Identity, known: MicrosoftIdentity | None) -> None:
    now = timezone.now()
    if known is None:
        MicrosoftIdentity.objects.create(
            user=user,
            ms_tenant_id=who.tenant_id,
            ms_object_id=who.object_id,
            username=who.username[:256],
            last_sign_in_at=now,
        )
    else:
        known.username = who.username[:256]
        known.last_sign_in_at = now
        known.save(update_fields=["username", "last_sign_in_at"])


def _link(attempt: AuthorizationAttempt, who: idtoken.Identity, known) -> object:
    if known is not None and known.user_id != attempt.user_id:
        raise FlowError(
            "not_member",
            f"The Microsoft account {who.username or who.object_id} already signs in to "
            "another Graphport login.",
        )
    return attempt.user


def _returning(attempt: AuthorizationAttempt, known: MicrosoftIdentity) -> object:
    user = known.user
    if not user.is_active:
        raise FlowError("not_member", "Your Graphport login is deactivated.")
    membership = getattr(user, "membership", None)
    if attempt.app is not None and (
        membership is None or membership.tenant_id != attempt.app.tenant_id
    ):
        # An organisation's own sign-in link signs in that organisation's people only.
        raise FlowError(
            "not_member",
            "This is another organisation's sign-in link: sign in from the portal's sign-in "
            "page instead.",
        )
    return user


def _join(attempt: AuthorizationAttempt, who: idtoken.Identity) -> object:
    """A first sign-in without an invitation: a member of the tenant whose verified directory
    the account is from, if that tenant lets its directory join; otherwise refused."""
    tenant = Tenant.objects.filter(directory_id=who.tenant_id).first()
    if attempt.app is not None and tenant != attempt.app.tenant:
        tenant = None
    if tenant is None or tenant.join_policy != Tenant.JoinPolicy.DIRECTORY:
        raise FlowError(
            "not_member",
            f"The Microsoft account {who.username or who.object_id} has no Graphport login, and "
            "its organisation does not let people join without an invitation. Ask your "
            "administrator to invite you.",
        )
    user = logins.new_login(who.username or who.object_id, who.email, who.name)
    Membership.objects.create(user=user, tenant=tenant, role=Membership.Role.MEMBER)
    audit.record(
        AuditEvent.Kind.MEMBER_JOINED,
        f"{who.username or who.object_id} joined from the verified directory.",
        tenant=tenant,
        actor=user,
    )
    return user


def _connect(result: SignedIn, app: EntraApp, who: idtoken.Identity, token: dict) -> None:
    """Sign in and connect in one consent: the connection is stored as the connect flow stores
    it. A problem here does not undo the sign-in; it is said on the next page."""
    if not token.get("refresh_token"):
        result.connect_problem = (
            "Signed in, but Microsoft granted no refresh token (offline_access), so the account "
            "was not connected. Connect it from your connections page."
        )
        return
    try:
        result.connection = connect.store_connection(app, result.user, who, token)
    except FlowError as error:
        result.connect_problem = f"Signed in, but the account was not connected: {error.message}"
