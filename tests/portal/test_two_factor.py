"""Two-factor authentication for staff: who must, enrolment, verification, recovery codes, and
that an unverified session can do nothing."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django_otp.oath import totp
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from connections.models import AuditEvent, MicrosoftIdentity, Tenant
from portal import twofactor
from tests import flows
from tests.conftest import ADELE, MS_TENANT, PLATFORM_CLIENT_ID
from tests.personas import PASSWORD

pytestmark = [pytest.mark.django_db, pytest.mark.two_factor]
ADMIN_INDEX = "/admin/"


def code_for(device: TOTPDevice, offset: int = 0) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, drift=offset):06d}"


def sign_in(client, user):
    response = client.post(reverse("login"), {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302
    return response


def enrol(client, user) -> TOTPDevice:
    client.get(reverse("two-factor-setup"))
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    response = client.post(reverse("two-factor-setup"), {"code": code_for(device)})
    assert response.status_code == 302
    device.refresh_from_db()
    assert device.confirmed
    return device


def test_an_operator_without_a_device_is_sent_to_enrolment(client, operator):
    sign_in(client, operator)
    response = client.get(ADMIN_INDEX)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("two-factor-setup"))
    page = client.get(response["Location"])
    assert b"needs a second factor" in page.content and b"<svg" in page.content


def test_an_authenticator_app_is_confirmed_with_a_code_and_then_the_admin_works(client, operator):
    sign_in(client, operator)
    client.get(reverse("two-factor-setup"))
    device = TOTPDevice.objects.get(user=operator)
    wrong = client.post(reverse("two-factor-setup"), {"code": "000000"})
    assert b"not right" in wrong.content
    assert not TOTPDevice.objects.get(user=operator).confirmed
    # django-otp throttles a device after a wrong code (1 s, then 2 s, …): not waited out here.
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=0)

    enrol(client, operator)

    assert client.get(ADMIN_INDEX).status_code == 200  # the enrolment verified this session
    client.post(reverse("logout"))
    sign_in(client, operator)
    response = client.get(ADMIN_INDEX)
    assert response["Location"].startswith(reverse("two-factor-verify"))
    # The code used at enrolment is good once: replayed, it is refused.
    replayed = client.post(reverse("two-factor-verify"), {"code": code_for(device)})
    assert replayed.status_code == 200 and b"not right" in replayed.content
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=0)
    device.refresh_from_db()
    accepted = client.post(
        reverse("two-factor-verify"), {"code": code_for(device, offset=1), "next": ADMIN_INDEX}
    )
    assert accepted.status_code == 302 and accepted["Location"] == ADMIN_INDEX
    assert client.get(ADMIN_INDEX).status_code == 200


def test_an_unverified_session_can_change_nothing(client, operator, acme):
    enrol_client = type(client)()
    sign_in(enrol_client, operator)
    enrol(enrol_client, operator)
    sign_in(client, operator)  # a second browser: password only
    url = reverse("admin:connections_tenant_change", args=[acme.tenant.pk])

    response = client.post(url, {"name": "Renamed", "join_policy": "invited"})

    assert response.status_code == 403
    assert Tenant.objects.get(pk=acme.tenant.pk).name == "Acme"


def test_tenant_administrators_need_it_only_when_their_tenant_says_so(client, acme):
    sign_in(client, acme.admin)
    assert client.get(ADMIN_INDEX).status_code == 200

    Tenant.objects.filter(pk=acme.tenant.pk).update(require_admin_2fa=True)
    response = client.get(ADMIN_INDEX)
    assert response["Location"].startswith(reverse("two-factor-setup"))

    enrol(client, acme.admin)
    assert client.get(ADMIN_INDEX).status_code == 200
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.TWO_FACTOR)
    assert event.tenant == acme.tenant and "authenticator app" in event.message


def test_members_are_never_asked(client, acme):
    Tenant.objects.filter(pk=acme.tenant.pk).update(require_admin_2fa=True)
    sign_in(client, acme.member)
    assert client.get(reverse("connections:mine")).status_code == 200


def test_a_recovery_code_works_once(client, operator):
    sign_in(client, operator)
    enrol(client, operator)
    page = client.post(reverse("two-factor-recovery-codes"))
    codes = page.context["codes"]
    assert len(codes) == twofactor.RECOVERY_CODES and "no-store" in page["Cache-Control"]

    for attempt in range(2):
        client.post(reverse("logout"))
        sign_in(client, operator)
        response = client.post(reverse("two-factor-verify"), {"code": codes[0]})
        if attempt == 0:
            assert response.status_code == 302
            assert client.get(ADMIN_INDEX).status_code == 200
        else:
            assert response.status_code == 200 and b"not right" in response.content
            assert client.get(ADMIN_INDEX).status_code == 302
    assert twofactor.recovery_codes_left(operator) == twofactor.RECOVERY_CODES - 1


@pytest.fixture
def contoso_admin_signs_in_as_adele(contoso, platform):
    """Contoso asks its administrators for a second factor; its administrator signs in with
    Microsoft as Adele, and the sign-in app's ID tokens carry `amr`."""
    Tenant.objects.filter(pk=contoso.tenant.pk).update(require_admin_2fa=True)
    MicrosoftIdentity.objects.create(user=contoso.admin, ms_tenant_id=MS_TENANT, ms_object_id=ADELE)
    platform.control.update_app(PLATFORM_CLIENT_ID, id_token_amr=True)
    return contoso.admin


def test_a_microsoft_sign_in_with_multi_factor_counts(
    client, platform, contoso_admin_signs_in_as_adele
):
    flows.sign_in(client, platform, mfa=False)
    assert client.get(ADMIN_INDEX)["Location"].startswith(reverse("two-factor-setup"))

    client.post(reverse("logout"))
    flows.sign_in(client, platform, mfa=True)
    assert client.get(ADMIN_INDEX).status_code == 200


def test_a_microsoft_sign_in_coming_back_to_a_password_session_verifies_it(
    client, platform, contoso_admin_signs_in_as_adele
):
    started = client.post(reverse("signin-microsoft"))
    answer = platform.control.sign_in(started["Location"], ADELE, mfa=True)
    sign_in(client, contoso_admin_signs_in_as_adele)  # meanwhile, in another tab
    assert client.get(ADMIN_INDEX).status_code == 302

    assert flows.follow_back(client, answer).status_code == 302

    assert client.get(ADMIN_INDEX).status_code == 200


def test_new_recovery_codes_and_removals_need_a_verified_session(client, operator):
    sign_in(client, operator)
    device = enrol(client, operator)
    client.post(reverse("logout"))
    sign_in(client, operator)  # not verified now
    response = client.post(reverse("two-factor-recovery-codes"))
    assert response.status_code == 302 and twofactor.recovery_codes_left(operator) == 0
    client.post(reverse("two-factor-remove"), {"device": device.persistent_id})
    assert TOTPDevice.objects.filter(pk=device.pk).exists()


def test_a_password_alone_cannot_add_a_factor_beside_an_existing_one(client, operator):
    owner = type(client)()
    sign_in(owner, operator)
    enrol(owner, operator)
    owner.get(reverse("two-factor-setup"))  # the owner's next authenticator app awaits its code
    pending = TOTPDevice.objects.get(user=operator, confirmed=False)
    sign_in(client, operator)  # a second browser: password only

    page = client.get(reverse("two-factor-setup"))
    added = client.post(reverse("two-factor-setup"), {"code": code_for(pending)})
    passkey = client.post(reverse("otp_webauthn:credential-registration-begin"))

    assert page["Location"].startswith(reverse("two-factor-verify"))
    assert added["Location"].startswith(reverse("two-factor-verify"))
    pending.refresh_from_db()
    assert not pending.confirmed
    assert passkey.status_code == 403
    assert client.get(ADMIN_INDEX).status_code == 302


def test_recovery_codes_come_after_an_app_or_a_passkey(client, operator):
    sign_in(client, operator)
    response = client.post(reverse("two-factor-recovery-codes"))
    assert response["Location"] == reverse("two-factor-setup")
    assert not StaticDevice.objects.filter(user=operator).exists()


def test_every_change_to_a_tenant_administrators_factors_is_audited(client, acme):
    sign_in(client, acme.admin)
    device = enrol(client, acme.admin)
    codes = client.post(reverse("two-factor-recovery-codes")).context["codes"]
    client.post(reverse("logout"))
    sign_in(client, acme.admin)
    client.post(reverse("two-factor-verify"), {"code": codes[0]})
    client.post(reverse("two-factor-remove"), {"device": device.persistent_id})

    events = AuditEvent.objects.filter(kind=AuditEvent.Kind.TWO_FACTOR).order_by("pk")
    assert [e.message.split(": ", 1)[1] for e in events] == [
        "added an authenticator app",
        "made new recovery codes",
        f"used a recovery code ({twofactor.RECOVERY_CODES - 1} left)",
        f"removed {twofactor.describe(device)}",
    ]
    assert {(e.tenant_id, e.actor_id) for e in events} == {(acme.tenant.pk, acme.admin.pk)}


def test_the_operators_rule_follows_the_setting(client, operator, settings):
    settings.TWO_FACTOR_FOR_OPERATORS = False
    sign_in(client, operator)
    assert client.get(ADMIN_INDEX).status_code == 200


def test_operators_see_second_factors_but_never_their_keys(client, operator, acme):
    sign_in(client, acme.admin)
    device = enrol(client, acme.admin)
    client.post(reverse("two-factor-recovery-codes"))
    code = twofactor.StaticToken.objects.filter(device__user=acme.admin).first().token
    operators = type(client)()
    sign_in(operators, operator)
    enrol(operators, operator)
    for url in (
        reverse("admin:otp_totp_totpdevice_changelist"),
        reverse("admin:otp_totp_totpdevice_change", args=[device.pk]),
        reverse("admin:otp_static_staticdevice_changelist"),
    ):
        page = operators.get(url)
        assert page.status_code == 200
        assert device.key.encode() not in page.content and code.encode() not in page.content
    # Tenant administrators do not reach them at all.
    assert client.get(reverse("admin:otp_totp_totpdevice_changelist")).status_code == 403
