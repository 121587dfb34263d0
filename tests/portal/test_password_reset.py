"""Choosing a new password by e-mail, for accounts that have one (portal.login)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.urls import reverse

from tests.personas import PASSWORD, make_user

pytestmark = pytest.mark.django_db

# Documentation addresses: no other test asks for a reset from them.
VISITOR = "203.0.113.31"
NEW_PASSWORD = "a-new-long-passphrase-7"


def ask(client, email, address=VISITOR):
    return client.post(reverse("password_reset"), {"email": email}, REMOTE_ADDR=address)


def test_a_password_account_gets_a_link_that_sets_a_new_password(client, mailoutbox):
    megan = make_user("megan")
    response = ask(client, megan.email)
    assert response.status_code == 302 and response["Location"] == reverse("password_reset_done")

    [message] = mailoutbox
    assert message.to == [megan.email]
    assert message.subject == "Choose a new Graphport password"
    assert "megan" in message.body and "&" not in message.body
    link = re.search(r"^http\S+$", message.body, re.MULTILINE).group(0)
    assert link.startswith(django_settings.PORTAL_BASE_URL + "/accounts/reset/")

    form = client.get(urlsplit(link).path, follow=True)
    assert "Choose a new password" in form.text
    set_password = form.redirect_chain[-1][0]
    done = client.post(
        set_password, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}, follow=True
    )
    assert "Your new password is set" in done.text

    signed_in = client.post(reverse("login"), {"username": "megan", "password": NEW_PASSWORD})
    assert signed_in.status_code == 302 and "_auth_user_id" in client.session
    client.logout()
    old = client.post(reverse("login"), {"username": "megan", "password": PASSWORD})
    assert old.status_code == 200 and "_auth_user_id" not in client.session


def test_a_used_link_cannot_be_used_again(client, mailoutbox):
    megan = make_user("megan")
    ask(client, megan.email)
    path = urlsplit(re.search(r"^http\S+$", mailoutbox[0].body, re.MULTILINE).group(0)).path
    form = client.get(path, follow=True)
    client.post(
        form.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    again = client.get(path, follow=True)
    assert "This link cannot be used" in again.text


def test_no_email_for_an_unknown_address_or_a_microsoft_only_account(client, mailoutbox):
    megan = make_user("megan")
    adele = make_user("adele")
    adele.set_unusable_password()  # signs in with Microsoft only
    adele.save()

    pages = [
        ask(client, email, address).content
        for email, address in (
            (megan.email, "203.0.113.32"),
            ("nobody@example.com", "203.0.113.33"),
            (adele.email, "203.0.113.34"),
        )
    ]
    assert [message.to for message in mailoutbox] == [[megan.email]]
    assert pages[0] == pages[1] == pages[2]
    done = client.get(reverse("password_reset_done")).text
    assert "If a Graphport account with a password has that address" in done


def test_requests_are_limited_per_email_address_whether_or_not_it_has_an_account(
    client, mailoutbox
):
    megan = make_user("megan")
    for email in (megan.email, "nobody@example.com"):
        for n in range(django_settings.PASSWORD_RESETS_PER_EMAIL):
            assert ask(client, email, f"198.51.100.{n}").status_code == 302
        refused = ask(client, email.upper(), "198.51.100.99")
        assert refused.status_code == 429
        assert re.search(
            r"Too many password reset requests for this e-mail address; try again in "
            r"(59|60) minutes\.",
            refused.text,
        )
    assert len(mailoutbox) == django_settings.PASSWORD_RESETS_PER_EMAIL


def test_requests_are_limited_per_address(client, mailoutbox):
    make_user("megan")
    for n in range(django_settings.PASSWORD_RESETS_PER_ADDRESS):
        assert ask(client, f"guess-{n}@example.com").status_code == 302
    refused = ask(client, "megan@example.com")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 3500
    assert "Too many password reset requests from your network" in refused.text
    assert mailoutbox == []
    assert ask(client, "megan@example.com", "203.0.113.35").status_code == 302
    assert len(mailoutbox) == 1
