from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from connections.models import ClientSecret, Connection
from core.encryption import UndecryptableValue


def raw(table: str, column: str, pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_raw_columns_hold_no_plaintext(acme):
    for table, column, pk, plain in [
        ("connections_clientsecret", "value", acme.secret.pk, "AcmeSecretValue~1"),
        ("connections_connection", "access_token", acme.connection.pk, "Acme-access-token-value"),
        ("connections_connection", "refresh_token", acme.connection.pk, "Acme-refresh-token-value"),
    ]:
        stored = raw(table, column, pk)
        assert plain not in stored
        assert stored.startswith("gAAAA")  # a Fernet token
    assert ClientSecret.objects.get(pk=acme.secret.pk).value == "AcmeSecretValue~1"


def test_null_stays_null(acme):
    Connection.objects.filter(pk=acme.connection.pk).update(refresh_token=None)
    assert raw("connections_connection", "refresh_token", acme.connection.pk) is None
    assert Connection.objects.get(pk=acme.connection.pk).refresh_token is None


def test_only_text_is_stored(acme):
    acme.connection.access_token = {"not": "text"}
    with pytest.raises(TypeError, match="stores text"):
        acme.connection.save()


def test_value_under_an_unknown_key_raises_instead_of_returning_ciphertext(acme, settings):
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(UndecryptableValue, match="connections_clientsecret.value"):
        ClientSecret.objects.get(pk=acme.secret.pk)


def test_rotation_re_encrypts_every_column_under_the_newest_key(acme, globex, settings):
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    before = raw("connections_connection", "refresh_token", acme.connection.pk)
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]

    # Old rows still read while both keys are configured.
    assert Connection.objects.get(pk=acme.connection.pk).refresh_token == "Acme-refresh-token-value"

    out = StringIO()
    call_command("rotate_encryption_keys", "--batch-size", "1", stdout=out)
    progress = out.getvalue()
    assert "connections_clientsecret.value: 2/2 rows checked, 2 re-encrypted" in progress
    assert "Done: 6 value(s) re-encrypted." in progress
    assert raw("connections_connection", "refresh_token", acme.connection.pk) != before

    # The old key can go now: everything reads under the new key alone.
    settings.FIELD_ENCRYPTION_KEYS = [new_key]
    assert Connection.objects.get(pk=globex.connection.pk).access_token == (
        "Globex-access-token-value"
    )
    assert ClientSecret.objects.get(pk=acme.secret.pk).value == "AcmeSecretValue~1"

    # Idempotent: a second run changes nothing.
    again = StringIO()
    call_command("rotate_encryption_keys", stdout=again)
    assert "Done: 0 value(s) re-encrypted." in again.getvalue()


def test_rotation_refuses_a_value_no_key_opens(acme, settings):
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(
        UndecryptableValue, match="Cannot re-encrypt connections_clientsecret.value"
    ):
        call_command("rotate_encryption_keys", stdout=StringIO())
