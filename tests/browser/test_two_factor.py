"""Two-factor authentication in Chromium: an operator enrols an authenticator app and signs in
with it, registers a passkey on Chromium's virtual authenticator (DevTools' WebAuthn domain) and
signs in with it, and gets in with a recovery code; a tenant administrator starts with a
passkey."""

from __future__ import annotations

import re

import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.models import WebAuthnCredential

from connections.models import AuditEvent, Membership, Tenant

pytestmark = [pytest.mark.browser, pytest.mark.two_factor, pytest.mark.django_db(transaction=True)]
PASSWORD = "a-long-unusual-passphrase"


def code_for(device: TOTPDevice, offset: int = 0) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, drift=offset):06d}"


def password_sign_in(page, portal, username):
    page.context.clear_cookies()
    page.goto(f"{portal}/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")


def virtual_authenticator(page):
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    options = {
        "protocol": "ctap2",
        "transport": "internal",
        "hasResidentKey": True,
        "hasUserVerification": True,
        "isUserVerified": True,
    }
    return cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})["authenticatorId"]


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)


def test_an_authenticator_app_then_a_passkey_then_a_recovery_code(page, portal, root):
    # Enrolment: the admin is out of reach until a second factor is set up.
    password_sign_in(page, portal, "root")
    page.wait_for_selector("#set-up-first")
    secret = page.inner_text("#totp-secret")
    device = TOTPDevice.objects.get(user=root, confirmed=False)
    assert secret and page.locator("#add-authenticator svg").count() == 1
    page.fill("#id_code", code_for(device))
    page.click("#confirm-authenticator")
    page.wait_for_selector("text=Authenticator app added")
    page.goto(f"{portal}/admin/")
    page.wait_for_selector("text=Site administration")

    # A passkey, registered on Chromium's virtual authenticator.
    virtual_authenticator(page)
    page.goto(f"{portal}/accounts/two-factor/")
    page.click("#passkey-register-button")
    page.wait_for_function("() => document.querySelectorAll('ul.devices li').length >= 2")
    assert WebAuthnCredential.objects.filter(user=root, confirmed=True).count() == 1
    page.click("#make-recovery-codes")
    codes = [c.strip() for c in page.locator("#recovery-codes code").all_inner_texts()]
    assert len(codes) == 10

    # Signing in again: the password alone leads to verification; the passkey completes it.
    password_sign_in(page, portal, "root")
    page.wait_for_url(re.compile(r"/accounts/two-factor/verify/"))
    page.click("#passkey-verification-button")
    page.wait_for_url(re.compile(r"/admin/$"))
    page.wait_for_selector("text=Site administration")

    # And with the authenticator app (the code after the one used at enrolment).
    password_sign_in(page, portal, "root")
    page.fill("#id_code", code_for(device, offset=1))
    page.click("#verify-code")
    page.wait_for_selector("text=Site administration")

    # And with a recovery code, which then no longer works.
    for expected in ("Site administration", "not right"):
        password_sign_in(page, portal, "root")
        page.fill("#id_code", codes[0])
        page.click("#verify-code")
        page.wait_for_selector(f"text={expected}")


def test_a_tenant_administrator_starts_with_a_passkey(page, portal, django_user_model):
    tenant = Tenant.objects.create(name="Acme", require_admin_2fa=True)
    admin = django_user_model.objects.create_user("acme-admin", password=PASSWORD, is_staff=True)
    Membership.objects.create(user=admin, tenant=tenant, role="admin")
    virtual_authenticator(page)

    password_sign_in(page, portal, "acme-admin")
    page.wait_for_selector("#set-up-first")
    page.click("#passkey-register-button")
    page.wait_for_selector("ul.devices li")
    page.click("text=Continue")  # back where the sign-in was going

    page.wait_for_selector("text=Site administration")
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.TWO_FACTOR)
    assert event.tenant == tenant and event.message == "acme-admin: registered a passkey"
