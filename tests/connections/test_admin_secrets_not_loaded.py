"""Admin pages never load the encrypted columns they never show (tokens, secrets, keys)."""

from __future__ import annotations

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from connections.models import AppCertificate, AuthorizationAttempt, ClientSecret, Connection
from core.encryption import EncryptedTextField
from graphsync.models import Subscription

pytestmark = pytest.mark.django_db

ENCRYPTED = [
    f'"{model._meta.db_table}"."{field.column}"'
    for model in (Connection, AuthorizationAttempt, ClientSecret, AppCertificate, Subscription)
    for field in model._meta.concrete_fields
    if isinstance(field, EncryptedTextField)
]


def loaded_secrets(client, url: str) -> list[str]:
    with CaptureQueriesContext(db_connection) as queries:
        assert client.get(url).status_code == 200
    return [column for column in ENCRYPTED for q in queries if column in q["sql"]]


@pytest.mark.parametrize("who", ["operator", "tenant administrator"])
def test_connection_and_app_pages_do_not_load_tokens_or_secrets(client, acme, operator, who):
    client.force_login(operator if who == "operator" else acme.admin)
    pages = [
        reverse("admin:connections_connection_changelist"),
        reverse("admin:connections_connection_change", args=[acme.connection.pk]),
        reverse("admin:connections_entraapp_change", args=[acme.app.pk]),
        reverse("admin:connections_authorizationattempt_changelist"),
        reverse("admin:graphsync_subscription_changelist"),
    ]
    assert ENCRYPTED  # the columns looked for exist
    for url in pages:
        assert loaded_secrets(client, url) == [], url
