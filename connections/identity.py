"""The one place that talks to the Microsoft identity platform's token endpoint.

Token requests go through requests-oauthlib. A compliance hook reads Microsoft's error JSON
before oauthlib does, because oauthlib keeps only `error` and `error_description`, and the
decisions here must come from `error_codes` and `suberror`: the same AADSTS code arrives under
different `error` values (docs/microsoft.md, "Error codes and how Graphport classifies them").

Requests go through core.outbound's rules (no internal hosts, no redirects, no plain http://
without MICROSOFT_ALLOW_HTTP). A custom cloud's host may be anyone's, so only a Microsoft-shaped
answer's text is kept, cut short; anything else is reported by its status and host alone, and
every failure to connect reads the same, so the app's page cannot be used to probe a network.
"""

from __future__ import annotations

import base64
import enum
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlencode

import requests
from django.conf import settings
from oauthlib.oauth2 import BackendApplicationClient, OAuth2Error, WebApplicationClient
from requests_oauthlib import OAuth2Session

from core import outbound

logger = logging.getLogger(__name__)

#: The most of an outside answer's text that is kept and shown (error descriptions, trace ids).
MAX_FOREIGN_TEXT = 300

if settings.MICROSOFT_ALLOW_HTTP:
    # oauthlib refuses http:// token URLs unless this is set; MICROSOFT_ALLOW_HTTP exists for
    # a local emulator only, and the app model refuses http:// URLs without it.
    os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")


class FailureClass(enum.StrEnum):
    """Whose move it is after a failed token request."""

    RECONNECT = "reconnect"  # the user must sign in again
    CONSENT = "consent"  # a user or an admin must consent
    APP_CREDENTIALS = "app_credentials"  # the tenant admin must fix the app's secret or cert
    CONFIGURATION = "configuration"  # the app registration does not match Azure
    TENANT = "tenant"  # the Microsoft tenant lacks something; tell its admin
    USER = "user"  # the account cannot be used here
    FLOW = "flow"  # start the connection again
    TRANSIENT = "transient"  # retry with backoff
    UNKNOWN = "unknown"


class SignInProblem(enum.StrEnum):
    """Finer than FailureClass, for the sign-in pages: what exactly stopped a sign-in."""

    REDIRECT_URI = "redirect_uri"  # the redirect URI is not registered in Azure
    CONSENT = "consent"  # a user or an admin must consent first
    DECLINED = "declined"  # the user declined to consent
    MFA = "mfa"  # another step (MFA, Conditional Access) was not completed
    CODE_USED = "code_used"  # the authorization code was already redeemed


class _Code(NamedTuple):
    failure_class: FailureClass
    explanation: str
    sign_in: SignInProblem | None = None


#: Every AADSTS code Graphport tells apart, each written here once.
_BY_CODE: dict[int, _Code] = {
    50076: _Code(
        FailureClass.RECONNECT,
        "Multi-factor authentication is required: sign in again.",
        SignInProblem.MFA,
    ),
    50079: _Code(
        FailureClass.RECONNECT,
        "The user must register for multi-factor authentication.",
        SignInProblem.MFA,
    ),
    70000: _Code(FailureClass.RECONNECT, "The grant is no longer valid: sign in again."),
    70008: _Code(FailureClass.RECONNECT, "The refresh token has expired or was revoked."),
    700082: _Code(
        FailureClass.RECONNECT,
        "The refresh token expired after 90 days without use: sign in again.",
    ),
    700084: _Code(
        FailureClass.RECONNECT, "The single-page-app refresh token reached its 24 h limit."
    ),
    50173: _Code(FailureClass.RECONNECT, "Access was revoked by the user or an administrator."),
    53003: _Code(
        FailureClass.RECONNECT,
        "Blocked by a Conditional Access policy of the tenant.",
        SignInProblem.MFA,
    ),
    65001: _Code(
        FailureClass.CONSENT,
        "Consent is missing for the requested permissions.",
        SignInProblem.CONSENT,
    ),
    90094: _Code(
        FailureClass.CONSENT,
        "An administrator must consent to these permissions.",
        SignInProblem.CONSENT,
    ),
    90095: _Code(
        FailureClass.CONSENT,
        "An administrator must consent to these permissions.",
        SignInProblem.CONSENT,
    ),
    7000215: _Code(
        FailureClass.APP_CREDENTIALS,
        "The client secret is wrong. Copy the secret's Value (not its Secret ID) from "
        "Certificates & secrets in the Azure portal.",
    ),
    7000222: _Code(
        FailureClass.APP_CREDENTIALS,
        "The client secret has expired. Create a new one under Certificates & secrets and add "
        "it here.",
    ),
    700027: _Code(
        FailureClass.APP_CREDENTIALS,
        "The certificate is not registered on the app (Certificates & secrets in the Azure "
        "portal), or the private key does not belong to it.",
    ),
    700024: _Code(
        FailureClass.APP_CREDENTIALS,
        "The client assertion is outside its valid time range: check this server's clock.",
    ),
    700016: _Code(
        FailureClass.APP_CREDENTIALS,
        "No app with this client id exists in that tenant: check the client id, the authority "
        "and that the app was consented there.",
    ),
    70011: _Code(
        FailureClass.CONFIGURATION,
        "The scopes are invalid (.default mixed with named scopes?).",
    ),
    700022: _Code(FailureClass.CONFIGURATION, "The scopes are invalid or name several resources."),
    700023: _Code(FailureClass.CONFIGURATION, "The scopes are invalid or name several resources."),
    50011: _Code(
        FailureClass.CONFIGURATION,
        "The redirect URI does not match the registered one.",
        SignInProblem.REDIRECT_URI,
    ),
    500113: _Code(
        FailureClass.CONFIGURATION,
        "The app has no redirect URI registered.",
        SignInProblem.REDIRECT_URI,
    ),
    50194: _Code(
        FailureClass.CONFIGURATION,
        "The app is single-tenant: use its tenant's own authority, not common.",
    ),
    90002: _Code(
        FailureClass.CONFIGURATION,
        "Tenant not found: check the authority or Directory (tenant) ID, and the cloud.",
    ),
    9001023: _Code(
        FailureClass.CONFIGURATION,
        "Client credentials need a tenant GUID or domain, not common or consumers.",
    ),
    50020: _Code(
        FailureClass.USER, "The account belongs to another tenant and is not a guest there."
    ),
    54005: _Code(
        FailureClass.FLOW,
        "The authorization code was already used: connect again.",
        SignInProblem.CODE_USED,
    ),
    650052: _Code(
        FailureClass.TENANT,
        "The tenant lacks a service subscription the app needs: tell the tenant's administrator.",
    ),
    50196: _Code(
        FailureClass.TRANSIENT, "Too many identical requests (loop detected): backing off."
    ),
}

#: The user declined consent. It only arrives in the authorize redirect's error_description,
#: never from the token endpoint, so it has no failure class.
DECLINED_CONSENT = 65004


def sign_in_problem(code: int | None) -> SignInProblem | None:
    """What an AADSTS code says stopped a sign-in, when it says something specific."""
    if code == DECLINED_CONSENT:
        return SignInProblem.DECLINED
    known = _BY_CODE.get(code) if code is not None else None
    return known.sign_in if known is not None else None


_BY_ERROR: dict[str, FailureClass] = {
    "invalid_grant": FailureClass.RECONNECT,
    "interaction_required": FailureClass.RECONNECT,
    "login_required": FailureClass.RECONNECT,
    "consent_required": FailureClass.CONSENT,
    "invalid_client": FailureClass.APP_CREDENTIALS,
    "unauthorized_client": FailureClass.CONFIGURATION,
    "invalid_scope": FailureClass.CONFIGURATION,
    "invalid_request": FailureClass.CONFIGURATION,
    "temporarily_unavailable": FailureClass.TRANSIENT,
    "server_error": FailureClass.TRANSIENT,
}


@dataclass
class IdentityError(Exception):
    """A failed request to the identity platform, with Microsoft's fields kept."""

    error: str
    description: str = ""
    codes: list[int] = field(default_factory=list)
    suberror: str = ""
    trace_id: str = ""
    correlation_id: str = ""
    http_status: int | None = None

    def __str__(self) -> str:
        return self.description or self.error

    @property
    def code(self) -> int | None:
        return self.codes[0] if self.codes else None

    @property
    def aadsts(self) -> str:
        return f"AADSTS{self.code}" if self.code else self.error

    @property
    def failure_class(self) -> FailureClass:
        # error_codes and suberror decide first; `error` only when they say nothing we know.
        for code in self.codes:
            if code in _BY_CODE:
                return _BY_CODE[code].failure_class
        if self.suberror == "consent_required":
            return FailureClass.CONSENT
        if self.suberror in {
            "bad_token",
            "token_expired",
            "session_expired",
            "user_password_expired",
        }:
            return FailureClass.RECONNECT
        if self.http_status is not None and self.http_status >= 500:
            return FailureClass.TRANSIENT
        return _BY_ERROR.get(self.error, FailureClass.UNKNOWN)

    @property
    def explanation(self) -> str:
        """Plain words for an administrator or a user; Microsoft's own text is kept apart."""
        for code in self.codes:
            if code in _BY_CODE:
                return _BY_CODE[code].explanation
        if self.failure_class == FailureClass.TRANSIENT:
            return "Microsoft's sign-in service is temporarily unavailable."
        return f"Microsoft refused the request ({self.error})."

    @classmethod
    def from_response(cls, response: requests.Response) -> IdentityError:
        """Microsoft's error fields, when the body has Microsoft's shape (docs/microsoft.md,
        "Token endpoint"); else UnexpectedAnswer, which keeps nothing of the body."""
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        status = response.status_code
        if not _microsoft_shaped(body):
            host = outbound.host_of(response.url or "")
            logger.info("%s answered HTTP %s without Microsoft's error shape", host, status)
            return UnexpectedAnswer(
                error=f"http_{status}",
                description=f"Unexpected answer (HTTP {status}) from {host}.",
                http_status=status,
            )
        codes = [c for c in body.get("error_codes") or [] if isinstance(c, int)]
        return cls(
            error=_foreign(body.get("error"), 100),
            description=_foreign(body.get("error_description")),
            codes=codes,
            suberror=_foreign(body.get("suberror"), 100),
            trace_id=_foreign(body.get("trace_id"), 100),
            correlation_id=_foreign(body.get("correlation_id"), 100),
            http_status=status,
        )


def _microsoft_shaped(body: Any) -> bool:
    """`error` with `error_description` or `error_codes`: what the token endpoint sends."""
    return (
        isinstance(body, dict)
        and isinstance(body.get("error"), str)
        and bool(body["error"])
        and (
            isinstance(body.get("error_description"), str)
            or isinstance(body.get("error_codes"), list)
        )
    )


def _foreign(value: Any, limit: int = MAX_FOREIGN_TEXT) -> str:
    """Outside text, cut short: it is shown on pages and kept in rows."""
    text = str(value or "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class UnexpectedAnswer(IdentityError):
    """An answer that is not Microsoft's (an HTML page, another service's error): reported by
    its status and host only, never its body. Classed by its status like any other."""

    @property
    def explanation(self) -> str:
        return self.description


class RequestRefused(IdentityError):
    """Graphport would not send the request or follow its answer (core.outbound): plain http://
    without MICROSOFT_ALLOW_HTTP, or a redirect. The app's URLs must change."""

    @property
    def failure_class(self) -> FailureClass:
        return FailureClass.CONFIGURATION

    @property
    def explanation(self) -> str:
        return self.description


class Unreachable(IdentityError):
    """The identity platform could not be reached or answered garbage: transient."""

    @property
    def failure_class(self) -> FailureClass:
        return FailureClass.TRANSIENT

    @property
    def explanation(self) -> str:
        return f"Microsoft's sign-in service could not be reached: {self.description}"


def _failed(token_url: str, exc: Exception) -> IdentityError:
    """What a request that got no usable answer becomes. Refused connections, timeouts, names
    that do not resolve and internal addresses all read the same, so that the message cannot
    tell a closed port from an open one; the details go to the log."""
    host = outbound.host_of(token_url)
    logger.info("token request to %s failed: %s: %s", host, type(exc).__name__, exc)
    if isinstance(exc, outbound.Refused) and not isinstance(exc, outbound.InternalHost):
        return RequestRefused(error="refused", description=f"{exc}.")
    if isinstance(exc, requests.RequestException):
        return Unreachable(error="unreachable", description=f"{host} could not be reached.")
    return Unreachable(
        error="bad_response", description=f"Unexpected answer from {host}: no token in it."
    )


def _raise_on_error(response: requests.Response) -> requests.Response:
    if response.status_code != 200:
        raise IdentityError.from_response(response)
    return response


class _TokenSession(outbound.Guarded, OAuth2Session):
    """requests-oauthlib's session under core.outbound's rules: its token and refresh requests
    go through `request`, which never follows a redirect."""


def _session(client, **kwargs) -> OAuth2Session:
    session = _TokenSession(client=client, **kwargs)
    session.register_compliance_hook("access_token_response", _raise_on_error)
    session.register_compliance_hook("refresh_token_response", _raise_on_error)
    return session


def _token_request(token_url: str, send: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    try:
        # Checked before oauthlib sees the URL, so a secret never goes over plain http:// without
        # MICROSOFT_ALLOW_HTTP, whatever OAUTHLIB_INSECURE_TRANSPORT says.
        outbound.check_request(token_url)
        return dict(send())
    except requests.RequestException as exc:
        raise _failed(token_url, exc) from exc
    except (ValueError, OAuth2Error) as exc:  # oauthlib could not parse a token from the body
        raise _failed(token_url, exc) from exc


def _fetch(session: OAuth2Session, token_url: str, **kwargs) -> dict[str, Any]:
    return _token_request(
        token_url,
        lambda: session.fetch_token(token_url, timeout=settings.MICROSOFT_HTTP_TIMEOUT, **kwargs),
    )


def app_token(
    token_url: str, client_id: str, credential: Mapping[str, str], scope: str
) -> dict[str, Any]:
    """A client-credentials token (application permissions): `scope` must be `{graph}/.default`.
    `credential` is the client's proof: a secret or a signed assertion, as body fields."""
    session = _session(BackendApplicationClient(client_id=client_id))
    token = _fetch(
        session,
        token_url,
        scope=[scope],
        include_client_id=True,
        client_id=client_id,
        **credential,
    )
    token["roles"] = token_roles(token.get("access_token"))
    return token


def token_roles(access_token: Any) -> list[str] | None:
    """The application permissions (`roles`) an app-only access token carries, read from its
    payload without checking the signature: Graph checks that, Graphport only learns from it
    what the tenant's administrator granted (docs/microsoft.md, "Organisation-wide sync").
    None when the token is not a JWT that can be read (Microsoft promises no format)."""
    if not isinstance(access_token, str) or access_token.count(".") != 2:
        return None
    payload = access_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, TypeError):
        return None
    roles = claims.get("roles", []) if isinstance(claims, dict) else None
    if not isinstance(roles, list):
        return None
    return [str(role) for role in roles if isinstance(role, str)][:200]


def authorization_url(
    authorize_url: str,
    client_id: str,
    redirect_uri: str,
    scopes: list[str],
    state: str,
    code_verifier: str,
    **params: str,
) -> str:
    """The authorize URL with PKCE S256; `params` adds nonce, prompt, response_mode, …"""
    client = WebApplicationClient(client_id)
    return client.prepare_request_uri(
        authorize_url,
        redirect_uri=redirect_uri,
        scope=scopes,
        state=state,
        code_challenge=client.create_code_challenge(code_verifier, "S256"),
        code_challenge_method="S256",
        **{k: v for k, v in params.items() if v},
    )


def exchange_code(
    token_url: str,
    client_id: str,
    credential: Mapping[str, str],
    code: str,
    redirect_uri: str,
    code_verifier: str,
) -> dict[str, Any]:
    # The session is given no scope on purpose: oauthlib would compare the granted `scope` with
    # the requested one and raise "Scope has changed", since Microsoft leaves offline_access out
    # of it. The caller compares granted with requested scopes itself, knowing that quirk.
    session = _session(WebApplicationClient(client_id), redirect_uri=redirect_uri)
    return _fetch(
        session,
        token_url,
        code=code,
        include_client_id=True,
        code_verifier=code_verifier,
        **credential,
    )


def refresh(
    token_url: str,
    client_id: str,
    credential: Mapping[str, str],
    refresh_token: str,
    scopes: list[str],
) -> dict[str, Any]:
    """Redeem a refresh token. The answer carries a new refresh token, which must be stored:
    servers with reuse detection revoke the whole grant when an old one comes back."""
    # The scope travels in the body, not on the session or client, for the reason given in
    # exchange_code: oauthlib would compare it with the granted scope and fail.
    session = _session(WebApplicationClient(client_id))
    return _token_request(
        token_url,
        lambda: session.refresh_token(
            token_url,
            refresh_token=refresh_token,
            body=urlencode({"scope": " ".join(scopes)}),
            timeout=settings.MICROSOFT_HTTP_TIMEOUT,
            client_id=client_id,
            **credential,
        ),
    )
