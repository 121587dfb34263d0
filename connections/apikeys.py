"""API keys of the customer API: made, checked, revoked.

A key is `gpk_` and 43 random URL-safe characters (256 bits). Only its SHA-256 is stored, with
its first characters as the prefix people recognise it by; a fast hash is enough for a value that
random (nothing to guess), and it lets a request find its key by one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.utils import timezone

from connections import audit
from connections.models import ApiKey, AuditEvent, Tenant

KEY_START = "gpk_"
PREFIX_LENGTH = 12  # "gpk_" and 8 characters: enough to tell keys apart in a list
#: last use is written at most this often per key, not on every request
TOUCH_EVERY = timedelta(seconds=60)


class KeyRefused(Exception):
    """The key is unknown, revoked or expired. `reason` is for the problem document; it never
    says whether a key of that value exists elsewhere."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def issue(
    tenant: Tenant,
    name: str,
    *,
    write: bool = False,
    expires_at=None,
    created_by=None,
) -> tuple[ApiKey, str]:
    """A new key of `tenant`: the saved row and the key itself, which is never seen again."""
    raw = new_raw()
    key = ApiKey(
        tenant=tenant,
        name=name,
        permission=ApiKey.Permission.WRITE if write else ApiKey.Permission.READ,
        expires_at=expires_at,
        created_by=created_by,
    )
    stamp(key, raw)
    key.save()
    recorded_created(key)
    return key, raw


def new_raw() -> str:
    return KEY_START + secrets.token_urlsafe(32)


def stamp(key: ApiKey, raw: str) -> None:
    """Give an unsaved key row its hash and prefix."""
    key.prefix = raw[:PREFIX_LENGTH]
    key.key_hash = digest(raw)


def recorded_created(key: ApiKey) -> None:
    audit.record(
        AuditEvent.Kind.API_KEY_CREATED,
        f"Created API key {key.name} ({key.prefix}…, {key.permission}).",
        tenant=key.tenant,
        actor=key.created_by,
        api_key=key.prefix,
    )


def revoke(key: ApiKey, actor=None) -> bool:
    """Revoke the key; False when it already was."""
    revoked = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if revoked:
        audit.record(
            AuditEvent.Kind.API_KEY_REVOKED,
            f"Revoked API key {key.name} ({key.prefix}…).",
            tenant=key.tenant,
            actor=actor,
            api_key=key.prefix,
        )
    return bool(revoked)


def authenticate(raw: str, address: str | None = None) -> ApiKey:
    """The usable key `raw` is, or KeyRefused. Notes its last use (time and address)."""
    if not raw.startswith(KEY_START) or len(raw) > 100:
        raise KeyRefused("This is not a Graphport API key (they start with gpk_).")
    key = ApiKey.objects.select_related("tenant").filter(key_hash=digest(raw)).first()
    if key is None:
        raise KeyRefused("Unknown API key.")
    now = timezone.now()
    if key.revoked_at is not None:
        raise KeyRefused("This API key was revoked.")
    if key.expires_at is not None and key.expires_at <= now:
        raise KeyRefused("This API key has expired.")
    if (
        key.last_used_at is None
        or now - key.last_used_at >= TOUCH_EVERY
        or (address and address != key.last_used_ip)
    ):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now, last_used_ip=address)
    return key
