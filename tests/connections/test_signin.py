"""Sign in with Microsoft: who comes in, who is refused, and that a refusal creates nothing."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from connections import signin, signin_views
from connections.models import (
    AuditEvent,
    AuthorizationAttempt,
    Connection,
    Membership,
    MicrosoftIdentity,
    Tenant,
)
from tests.conftest import ADELE, ALEX, FABRIKAM, MS_TENANT, PLATFORM_CLIENT_ID
from tests.flows import follow_back, sign_in

pytestmark = pytest.mark.django_db

User = get_user_model()


def directory_joins(tenant: Tenant) -> Tenant:
    tenant.directory_id = MS_TENANT
    tenant.join_policy = Tenant.JoinPolicy.DIRECTORY
    tenant.save()
    return tenant


def signed_in_as(client):
    return client.get("/").wsgi_request.user


def counts():
    return (User.objects.count(), Membership.objects.count(), MicrosoftIdentity.objects.count())


def test_the_authorize_request_is_an_oidc_code_flow_with_pkce_state_and_nonce(client, platform):
    response = client.post(reverse("signin-microsoft"))
    location = response["Location"]
    assert location.startswith(f"{platform.login_url}/organizations/oauth2/v2.0/authorize?")
    for part in ("code_challenge_method=S256", "nonce=", "state=", "response_mode=form_post"):
        assert part in location
    assert "scope=openid+profile+email" in location  # nothing of the person's data
    attempt = AuthorizationAttempt.objects.get()
    assert attempt.kind == AuthorizationAttempt.Kind.SIGN_IN and attempt.app is None


def test_a_new_directory_member_joins_on_first_sign_in(client, platform, contoso):
    directory_joins(contoso.tenant)

    response = sign_in(client, platform)

    assert response.status_code == 302 and response["Location"] == "/"
    user = signed_in_as(client)
    assert user.membership.tenant == contoso.tenant
    assert user.membership.role == Membership.Role.MEMBER and not user.is_staff
    assert not user.has_usable_password()
    identity = MicrosoftIdentity.objects.get(user=user)
    assert (identity.ms_tenant_id, identity.ms_object_id) == (MS_TENANT, ADELE)
    kinds = set(AuditEvent.objects.filter(tenant=contoso.tenant).values_list("kind", flat=True))
    assert {AuditEvent.Kind.MEMBER_JOINED, AuditEvent.Kind.SIGNED_IN} <= kinds

    client.post(reverse("logout"))
    sign_in(client, platform)  # the second time: the same login, nothing new
    assert signed_in_as(client) == user
    assert User.objects.filter(microsoft_identities__isnull=False).count() == 1


def test_without_the_join_policy_a_directory_member_is_refused(client, platform, contoso):
    contoso.tenant.directory_id = MS_TENANT
    contoso.tenant.save()
    before = counts()

    response = sign_in(client, platform)

    assert response.status_code == 400
    assert b"invite you" in response.content
    assert counts() == before
    assert not signed_in_as(client).is_authenticated


def test_an_outsider_is_refused_with_a_clear_page_and_nothing_created(
    client, platform, fabrikam, contoso
):
    directory_joins(contoso.tenant)
    outsider = fabrikam.control.add_user(FABRIKAM, upn="eve@fabrikam.example")
    before = counts()

    response = sign_in(client, platform, user=outsider["id"])

    assert response.status_code == 400
    assert b"You cannot sign in here yet" in response.content
    assert b"eve@fabrikam.example" in response.content
    assert counts() == before
    attempt = AuthorizationAttempt.objects.get()
    assert attempt.outcome == AuthorizationAttempt.Outcome.FAILED and attempt.error == "not_member"


def test_a_matching_email_from_another_directory_takes_over_nothing(
    client, platform, fabrikam, contoso
):
    """Eve's directory gives her the e-mail of a Contoso member: she is still nobody here."""
    directory_joins(contoso.tenant)
    eve = fabrikam.control.add_user(FABRIKAM, upn=contoso.member.email)

    response = sign_in(client, platform, user=eve["id"])

    assert response.status_code == 400
    assert not signed_in_as(client).is_authenticated
    assert not MicrosoftIdentity.objects.exists()


def test_the_same_oid_from_another_tenant_is_another_person(client, platform, fabrikam, contoso):
    sign_in_link = MicrosoftIdentity.objects.create(
        user=contoso.member, ms_tenant_id=MS_TENANT, ms_object_id=ADELE
    )
    # Fabrikam's directory holds an account with Adele's object id (ids are unique per tenant
    # only): its ID token says tid=Fabrikam, oid=Adele.
    fabrikam.control.add_user(FABRIKAM, id=ADELE, upn="not-adele@fabrikam.example")

    response = sign_in(client, platform, user="not-adele@fabrikam.example")

    assert response.status_code == 400
    assert not signed_in_as(client).is_authenticated
    assert MicrosoftIdentity.objects.get() == sign_in_link


def test_a_linked_login_signs_in_and_a_deactivated_one_does_not(client, platform, contoso):
    MicrosoftIdentity.objects.create(
        user=contoso.member, ms_tenant_id=MS_TENANT, ms_object_id=ADELE
    )
    sign_in(client, platform)
    assert signed_in_as(client) == contoso.member

    client.post(reverse("logout"))
    contoso.member.is_active = False
    contoso.member.save()
    response = sign_in(client, platform)
    assert response.status_code == 400 and b"deactivated" in response.content
    assert not signed_in_as(client).is_authenticated


def test_the_callback_completes_only_in_the_browser_that_started(client, platform, contoso):
    directory_joins(contoso.tenant)
    response = client.post(reverse("signin-microsoft"))
    outcome = platform.control.sign_in(response["Location"], ADELE)
    other_browser = type(client)()

    assert b"Finishing sign-in" in follow_back(other_browser, outcome).content
    answer = other_browser.post(
        reverse("connections:callback"), {**outcome["fields"], "resubmitted": "1"}
    )

    assert answer.status_code == 400
    assert not MicrosoftIdentity.objects.exists()
    # ... and once used, never again.
    follow_back(client, outcome)
    assert signed_in_as(client).is_authenticated
    client.post(reverse("logout"))
    replay = client.post(reverse("connections:callback"), {**outcome["fields"], "resubmitted": "1"})
    assert replay.status_code == 400
    assert not signed_in_as(client).is_authenticated


def test_multi_factor_counts_only_when_the_id_token_says_so(client, platform, contoso):
    directory_joins(contoso.tenant)
    sign_in(client, platform, mfa=True)
    assert signin.MICROSOFT_MFA_SESSION_KEY not in client.session  # v2.0 tokens: no amr

    client.post(reverse("logout"))
    platform.control.update_app(PLATFORM_CLIENT_ID, id_token_amr=True)
    sign_in(client, platform, mfa=False)
    assert signin.MICROSOFT_MFA_SESSION_KEY not in client.session  # amr: ["pwd"]

    client.post(reverse("logout"))
    sign_in(client, platform, mfa=True)
    assert client.session[signin.MICROSOFT_MFA_SESSION_KEY] is True


def test_an_organisations_own_app_signs_in_and_connects_with_one_consent(
    client, microsoft, contoso
):
    directory_joins(contoso.tenant)
    contoso.tenant.signin_app = contoso.app
    contoso.tenant.save()
    path = reverse("signin-organisation", args=[contoso.tenant.signin_key])
    assert b"Also connect" in client.get(path).content

    response = sign_in(client, microsoft, path=path, data={"connect": "on"})

    assert response.status_code == 302
    user = signed_in_as(client)
    connection = Connection.objects.get(user=user)
    assert connection.app == contoso.app and connection.ms_object_id == ADELE
    assert connection.refresh_token and connection.status == Connection.Status.ACTIVE
    # One trip to Microsoft did both: one attempt, one code redeemed.
    assert AuthorizationAttempt.objects.get().connection == connection


def test_an_organisations_link_does_not_sign_in_another_organisations_people(
    client, microsoft, contoso, settings
):
    other = Tenant.objects.create(name="Other Ltd")
    other.signin_app = contoso.app  # not its app: ignored, the platform's would be used
    other.save()
    contoso.tenant.signin_app = contoso.app
    contoso.tenant.save()
    MicrosoftIdentity.objects.create(user=contoso.member, ms_tenant_id=MS_TENANT, ms_object_id=ALEX)
    outsider = get_user_model().objects.create_user("outsider")
    Membership.objects.create(user=outsider, tenant=other)
    MicrosoftIdentity.objects.create(user=outsider, ms_tenant_id=MS_TENANT, ms_object_id=ADELE)
    path = reverse("signin-organisation", args=[contoso.tenant.signin_key])

    response = sign_in(client, microsoft, path=path)

    assert response.status_code == 400
    assert b"another organisation" in response.content
    assert not signed_in_as(client).is_authenticated
    assert client.get(reverse("signin-organisation", args=["nope"])).status_code == 404


def test_a_member_links_their_microsoft_account(client, platform, contoso):
    client.force_login(contoso.member)
    assert b"Sign in with Microsoft next time" in client.get(reverse("connections:mine")).content
    response = sign_in(client, platform, path=reverse("signin-link"))
    assert response.status_code == 302
    assert MicrosoftIdentity.objects.get().user == contoso.member
    page = client.get(reverse("connections:mine")).content
    assert b"You sign in with Microsoft as <strong>adele.vance@contoso.example" in page

    client.post(reverse("logout"))
    sign_in(client, platform)
    assert signed_in_as(client) == contoso.member


def test_starting_sign_ins_is_rate_limited_per_address(client, platform, settings):
    for _ in range(signin_views.STARTS_PER_ADDRESS):
        assert (
            client.post(reverse("signin-microsoft"), REMOTE_ADDR="203.0.113.5").status_code == 302
        )
    refused = client.post(reverse("signin-microsoft"), REMOTE_ADDR="203.0.113.5")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert AuthorizationAttempt.objects.count() == signin_views.STARTS_PER_ADDRESS
    assert client.post(reverse("signin-microsoft"), REMOTE_ADDR="203.0.113.6").status_code == 302
