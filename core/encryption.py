"""Encryption at rest for secrets and tokens: a text field over ``cryptography``'s MultiFernet.

Written by hand because the maintained packages get it wrong (docs/architecture.md, "Encryption
at rest"): django-cryptography no longer imports on Django 5 and pickles values, and
django-fernet-encrypted-fields hands back the ciphertext when no key matches. Here the newest key
(first in FIELD_ENCRYPTION_KEYS) encrypts, older keys only decrypt, values are plain strings
(never pickled), and a value no key can open raises ``UndecryptableValue``.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver


class UndecryptableValue(Exception):
    """A stored value that none of FIELD_ENCRYPTION_KEYS can decrypt."""


@lru_cache(maxsize=1)
def _keys(keys: tuple[str, ...]) -> tuple[Fernet, MultiFernet]:
    fernets = [Fernet(key) for key in keys]
    return fernets[0], MultiFernet(fernets)


def primary() -> Fernet:
    return _keys(tuple(settings.FIELD_ENCRYPTION_KEYS))[0]


def keyring() -> MultiFernet:
    return _keys(tuple(settings.FIELD_ENCRYPTION_KEYS))[1]


@receiver(setting_changed)
def _forget_keys(setting: str, **kwargs) -> None:
    if setting == "FIELD_ENCRYPTION_KEYS":
        _keys.cache_clear()


def encrypt(value: str) -> str:
    return keyring().encrypt(value.encode()).decode("ascii")


def decrypt(token: str, where: str = "a value") -> str:
    try:
        return keyring().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeEncodeError):
        raise UndecryptableValue(
            f"Cannot decrypt {where}: none of FIELD_ENCRYPTION_KEYS opens it. Was the key that "
            "wrote it removed before `manage.py rotate_encryption_keys` re-encrypted it?"
        ) from None


def needs_rotation(token: str) -> bool:
    """True when the newest key did not write this token."""
    try:
        primary().decrypt(token.encode("ascii"))
    except InvalidToken:
        return True
    return False


def rotate(token: str, where: str = "a value") -> str:
    try:
        return keyring().rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken:
        raise UndecryptableValue(f"Cannot re-encrypt {where}: no key opens it") from None


class EncryptedTextField(models.TextField):
    """A string stored as a Fernet token. Not searchable or orderable by its plain value."""

    description = "Text encrypted with the keys in FIELD_ENCRYPTION_KEYS"

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        return decrypt(value, where=f"{self.model._meta.db_table}.{self.column}")

    def get_prep_value(self, value):
        # Field's, not TextField's: TextField would turn any object into its str().
        value = models.Field.get_prep_value(self, value)
        if value is None:
            return None
        if not isinstance(value, str):
            raise TypeError(f"{self.name}: an encrypted field stores text, not {type(value)!r}")
        return encrypt(value)


def encrypted_fields() -> list[tuple[type[models.Model], EncryptedTextField]]:
    found = []
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, EncryptedTextField):
                found.append((model, field))
    return found
