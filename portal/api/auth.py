"""Who is calling: an API key in `Authorization: Bearer`, what it may do, and how often."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions, throttling

from connections import apikeys
from connections.models import ApiKey
from core import keys, ratelimit


class KeyHolder:
    """The caller behind a key, as DRF's `request.user`: there is no person, only the key's
    tenant (`request.auth` is the ApiKey)."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, key: ApiKey):
        self.key = key
        self.tenant = key.tenant

    def __str__(self) -> str:
        return f"API key {self.key}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise exceptions.AuthenticationFailed(
                "Authorization: send the API key as 'Bearer gpk_…'."
            )
        try:
            key = apikeys.authenticate(raw.strip(), ratelimit.client_ip(request._request))
        except apikeys.KeyRefused as exc:
            raise exceptions.AuthenticationFailed(exc.reason) from None
        return KeyHolder(key), key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="graphport"'


class HasKey(permissions.BasePermission):
    """Any usable key may read; writing (anything but GET, HEAD, OPTIONS) needs a write key."""

    message = "This API key may only read: writing needs a key with the write permission."

    def has_permission(self, request, view) -> bool:
        if not isinstance(request.auth, ApiKey):
            raise exceptions.NotAuthenticated(
                "Authorization: send an API key as 'Bearer gpk_…' (a tenant administrator "
                "creates one in the admin, under API keys)."
            )
        return request.method in permissions.SAFE_METHODS or request.auth.can_write


class PerKeyRate(throttling.BaseThrottle):
    """API_RATE_LIMIT_PER_MINUTE requests per key, counted in Redis so every web process
    shares the count."""

    def allow_request(self, request, view) -> bool:
        key = request.auth
        if not isinstance(key, ApiKey):
            return True
        self.retry_in = ratelimit.over_budget(
            keys.api_rate(key.pk), settings.API_RATE_LIMIT_PER_MINUTE, 60
        )
        return self.retry_in is None

    def wait(self) -> float | None:
        return self.retry_in


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes ApiKeyAuthentication (registered by being defined)."""

    target_class = ApiKeyAuthentication
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (gpk_…) a tenant administrator created in the admin.",
        }
