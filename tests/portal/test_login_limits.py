"""Failed password sign-ins are limited per account and per address, on the portal's login page
and the admin's (portal.login)."""

from __future__ import annotations

import logging
import re

import pytest
import redis
from django.conf import settings as django_settings
from django.urls import reverse

from core import keys
from tests.personas import PASSWORD, make_user

pytestmark = pytest.mark.django_db

# Documentation addresses: no other test signs in from them.
ATTACKER = "203.0.113.21"
ELSEWHERE = "203.0.113.22"
WRONG = "not-the-password-1"
TOO_MANY_FOR_ACCOUNT = "Too many failed sign-ins for this account; try again in"


@pytest.fixture
def budgets():
    """The Redis that holds the budgets (tests/conftest.py empties them before each test)."""
    return redis.Redis.from_url(django_settings.REDIS_URL)


def sign_in(client, username, password, address=ATTACKER, page="login"):
    return client.post(
        reverse(page), {"username": username, "password": password}, REMOTE_ADDR=address
    )


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def fail(client, username, times, address=ATTACKER, page="login"):
    for _ in range(times):
        sign_in(client, username, WRONG, address, page)


def test_the_eleventh_try_after_ten_failures_is_refused_even_with_the_right_password(client):
    make_user("megan")
    for _ in range(9):
        response = sign_in(client, "megan", WRONG)
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.text
    tenth = sign_in(client, "megan", WRONG)
    assert tenth.status_code == 429 and TOO_MANY_FOR_ACCOUNT in tenth.text

    eleventh = sign_in(client, "megan", PASSWORD)
    assert eleventh.status_code == 429 and TOO_MANY_FOR_ACCOUNT in eleventh.text
    assert not signed_in(client)


def test_the_account_budget_holds_from_every_address(client):
    make_user("megan")
    fail(client, "megan", 10, ATTACKER)
    response = sign_in(client, "megan", PASSWORD, ELSEWHERE)
    assert response.status_code == 429 and not signed_in(client)


def test_other_accounts_sign_in_as_usual(client):
    make_user("megan")
    make_user("adele")
    fail(client, "megan", 10)
    response = sign_in(client, "adele", PASSWORD)
    assert response.status_code == 302 and signed_in(client)


def test_a_successful_sign_in_does_not_reset_the_account_budget(client):
    make_user("megan")
    fail(client, "megan", 9)
    assert sign_in(client, "megan", PASSWORD).status_code == 302
    client.logout()
    fail(client, "megan", 1)
    response = sign_in(client, "megan", PASSWORD)
    assert response.status_code == 429 and not signed_in(client)


def test_case_variants_of_a_username_share_its_budget(client):
    make_user("megan")
    fail(client, "MEGAN", 5)
    fail(client, "Megan", 5)
    assert sign_in(client, "megan", PASSWORD).status_code == 429


def test_the_address_budget_spans_usernames(client):
    make_user("megan")
    for n in range(django_settings.LOGIN_FAILURES_PER_ADDRESS):
        sign_in(client, f"guess-{n}", WRONG)

    refused = sign_in(client, "megan", PASSWORD)
    assert refused.status_code == 429 and not signed_in(client)
    assert "Too many failed sign-ins from your network; try again in" in refused.text
    assert sign_in(client, "megan", PASSWORD, ELSEWHERE).status_code == 302


def test_the_admin_login_shares_the_budgets(client):
    operator = make_user("operator", staff=True, superuser=True)
    fail(client, operator.username, 5, page="login")
    fail(client, operator.username, 5, page="admin:login")

    response = sign_in(client, operator.username, PASSWORD, page="admin:login")
    assert response.status_code == 429 and not signed_in(client)
    assert TOO_MANY_FOR_ACCOUNT in response.text
    assert sign_in(client, operator.username, PASSWORD, page="login").status_code == 429


def test_the_admin_login_is_limited_per_address(client, settings):
    settings.LOGIN_FAILURES_PER_ADDRESS = 3
    operator = make_user("operator", staff=True, superuser=True)
    for name in ("root", "admin", "administrator"):
        sign_in(client, name, WRONG, page="admin:login")
    response = sign_in(client, operator.username, PASSWORD, page="admin:login")
    assert response.status_code == 429 and not signed_in(client)


def test_the_right_password_of_a_member_on_the_admin_login_is_no_failure(client):
    make_user("megan")
    for _ in range(10):
        response = sign_in(client, "megan", PASSWORD, page="admin:login")
        assert response.status_code == 200  # refused as not staff, not counted
    assert sign_in(client, "megan", PASSWORD).status_code == 302


def test_a_refusal_names_the_wait(client):
    make_user("megan")
    fail(client, "megan", 10)
    response = sign_in(client, "megan", PASSWORD)
    minutes = int(re.search(r"try again in (\d+) minutes\.", response.text).group(1))
    window_minutes = django_settings.LOGIN_WINDOW_SECONDS // 60
    assert window_minutes - 1 <= minutes <= window_minutes
    assert abs(int(response["Retry-After"]) - minutes * 60) <= 60


def test_failures_are_logged_without_what_was_typed(client, caplog, budgets):
    make_user("megan")
    typed_as_username = "Tr0ub4dor&3-in-the-wrong-field"
    with caplog.at_level(logging.WARNING, logger="portal.login"):
        fail(client, "megan", 10)
        sign_in(client, typed_as_username, WRONG)

    log = "\n".join(record.getMessage() for record in caplog.records)
    assert f"Failed sign-in for user megan from {ATTACKER}" in log
    assert f"Failed sign-in for an unknown username from {ATTACKER}" in log
    assert "Too many failed sign-ins for this account (user megan" in log
    assert WRONG not in log and typed_as_username not in log
    stored = b" ".join(budgets.scan_iter(keys.LOGIN_FAILURES_PATTERN)).lower()
    assert b"megan" not in stored and typed_as_username.lower().encode() not in stored
