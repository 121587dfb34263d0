"""Delegated scope rules of the Microsoft identity platform (docs/microsoft.md, "Authorization
request" and "Token endpoint")."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

from connections.clouds import NATIONAL_CLOUDS

# Always requested for a delegated connection: sign-in (openid, profile, email) and a refresh
# token (offline_access). Microsoft leaves offline_access out of the granted `scope` it returns.
ALWAYS_REQUESTED = ("openid", "profile", "email", "offline_access")
OIDC_SCOPES = frozenset(ALWAYS_REQUESTED)

_SCOPE = re.compile(r"^[A-Za-z0-9._:/\-]+$")

#: An app's own scopes: more than an authorization URL can carry is a mistake, not a need (Graph
#: has a few hundred permissions, an app asks for a handful). The text is bounded too, so a
#: pasted blob is refused before it is parsed.
MAX_SCOPES = 100
MAX_SCOPE_LENGTH = 200
MAX_SCOPES_TEXT = 4000


def parse(text: str) -> list[str]:
    """Scopes separated by spaces, commas or new lines, duplicates removed, order kept."""
    seen: dict[str, None] = {}
    for scope in re.split(r"[\s,]+", text.strip()):
        if scope:
            seen.setdefault(scope, None)
    return list(seen)


def resource_of(scope: str) -> str:
    """The resource a scope belongs to; a bare scope like ``Mail.Read`` means Microsoft Graph."""
    if "://" in scope:
        return scope.rsplit("/", 1)[0].lower()
    if scope.lower() in OIDC_SCOPES:
        return ""
    return "graph"


def validate_delegated(scopes: list[str], graph_host: str | None = None) -> None:
    """Raise ValidationError with Microsoft's rule, and its AADSTS code, for an invalid set."""
    if len(scopes) > MAX_SCOPES:
        raise ValidationError(
            f"At most {MAX_SCOPES} scopes can be requested: found {len(scopes):,}. Ask only for "
            "the Microsoft Graph permissions the app's syncs use."
        )
    errors = []
    for scope in scopes:
        if len(scope) > MAX_SCOPE_LENGTH:
            errors.append(
                f"{scope[:40]!r}… is longer than a scope can be ({MAX_SCOPE_LENGTH} characters)."
            )
        elif not _SCOPE.match(scope):
            errors.append(f"{scope!r} is not a scope name (letters, digits and . _ : / - only).")
    default = [s for s in scopes if s.endswith("/.default") or s == ".default"]
    named = [s for s in scopes if s not in default and s.lower() not in OIDC_SCOPES]
    if default and named:
        errors.append(
            "'.default' cannot be combined with named scopes (Microsoft rejects this with "
            "AADSTS70011): use either .default alone or a list of named scopes. Found "
            f"{', '.join(default)} together with {', '.join(named)}."
        )
    # Every cloud's Graph URI names Microsoft Graph, and so does the app's own (custom) one.
    graph_uris = {hosts.graph.lower() for hosts in NATIONAL_CLOUDS.values()}
    if graph_host:
        graph_uris.add(graph_host.lower().rstrip("/"))
    resources = {"graph" if r in graph_uris else r for r in map(resource_of, scopes)} - {""}
    if len(resources) > 1:
        errors.append(
            "Scopes of several resources cannot be requested together (AADSTS70011/700022): "
            f"found {', '.join(sorted(resources))}."
        )
    if errors:
        raise ValidationError(errors)


def requested(app_scopes: list[str]) -> list[str]:
    """What an authorization request asks for: the always-requested scopes plus the app's."""
    extra = [s for s in app_scopes if s.lower() not in OIDC_SCOPES]
    return [*ALWAYS_REQUESTED, *extra]
