from django.urls import include, path

from portal import twofactor_views

urlpatterns = [
    path("", twofactor_views.setup, name="two-factor-setup"),
    path("verify/", twofactor_views.verify, name="two-factor-verify"),
    path("recovery-codes/", twofactor_views.recovery_codes, name="two-factor-recovery-codes"),
    path("remove/", twofactor_views.remove, name="two-factor-remove"),
    # The passkey ceremonies (django-otp-webauthn's JSON endpoints and their script's strings).
    path("passkeys/", include("django_otp_webauthn.urls", namespace="otp_webauthn")),
]
