"""Two-factor authentication for staff (django-otp): an authenticator app (TOTP), passkeys
(WebAuthn, django-otp-webauthn) and single-use recovery codes.

Who must: operators (superusers) while TWO_FACTOR_FOR_OPERATORS is on, and the administrators of
a tenant that turned `require_admin_2fa` on. Members never. A session counts as verified when a
device verified it (django-otp's `otp_login`) or when the person signed in with Microsoft and
the ID token said multi-factor (connections.signin.MICROSOFT_MFA_SESSION_KEY).

Until then `TwoFactorMiddleware` keeps them to the two-factor pages: a GET goes to verification
(or to enrolment, with no device yet), anything else is refused, so an unverified session never
acts. Tokens are checked against one kind of device at a time, so django-otp's throttling (a
growing delay after each wrong code, per device) applies.
"""

from __future__ import annotations

import base64
import logging
from urllib.parse import urlencode, urlsplit

import qrcode
import qrcode.image.svg
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponseForbidden, HttpResponseRedirect
from django.urls import reverse
from django_otp import devices_for_user, user_has_device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.helpers import WebAuthnHelper
from django_otp_webauthn.models import WebAuthnCredential

from connections import audit
from connections.models import AuditEvent
from connections.signin import MICROSOFT_MFA_SESSION_KEY
from connections.tenancy import admin_tenant, member_tenant

logger = logging.getLogger(__name__)

RECOVERY_CODES = 10
RECOVERY_DEVICE_NAME = "Recovery codes"

# Paths an unverified session may still reach: the two-factor pages themselves (and the passkey
# ceremony's JSON endpoints under them), signing out, static files, and what never carries a
# staff session (the health check, Graph's webhooks, the customer API with its keys). The
# OAuth callback too: it only completes an attempt this browser or this user started, and every
# start is closed to an unverified session; it is also where a Microsoft sign-in with
# multi-factor verifies one (a form_post callback would otherwise meet the 403 below).
OPEN_PREFIXES = (
    "/accounts/two-factor/",
    "/accounts/logout/",
    "/static/",
    "/healthz",
    "/livez",
    "/metrics",
    "/graph/",
    "/api/",
    "/connections/callback/",
)


def required(user) -> bool:
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return False
    if user.is_superuser:
        return settings.TWO_FACTOR_FOR_OPERATORS
    tenant = admin_tenant(user)
    return tenant is not None and tenant.require_admin_2fa


def verified(request: HttpRequest) -> bool:
    return bool(request.user.is_verified() or request.session.get(MICROSOFT_MFA_SESSION_KEY))


def has_device(user) -> bool:
    return user_has_device(user, confirmed=True)


class TwoFactorMiddleware:
    """After django-otp's OTPMiddleware: staff who must use a second factor and have not, reach
    only the two-factor pages."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        path = request.path
        if path.startswith(OPEN_PREFIXES) or not required(request.user) or verified(request):
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return HttpResponseForbidden(
                "A second factor is needed first: verify it, then try again.",
                content_type="text/plain; charset=utf-8",
            )
        target = "two-factor-verify" if has_device(request.user) else "two-factor-setup"
        return HttpResponseRedirect(page_url(target, request.get_full_path()))


def page_url(name: str, next_path: str) -> str:
    """A two-factor page that returns to `next_path` once done."""
    return reverse(name) + "?" + urlencode({"next": next_path})


# --- devices ------------------------------------------------------------------------------------


def _record(user, message: str) -> None:
    logger.info("two-factor: %s: %s", user, message)
    tenant = member_tenant(user)
    if tenant is not None:  # operators belong to no tenant: their changes are logged only
        audit.record(AuditEvent.Kind.TWO_FACTOR, f"{user}: {message}", tenant=tenant, actor=user)


def devices(user) -> list:
    """The user's confirmed devices, recovery codes last."""
    found = list(devices_for_user(user, confirmed=True))
    return sorted(found, key=lambda d: isinstance(d, StaticDevice))


def pending_totp(user) -> TOTPDevice:
    """The authenticator app being added: one unconfirmed device, kept until confirmed, so
    reloading the page shows the same secret."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    return device or TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)


def totp_secret(device: TOTPDevice) -> str:
    return base64.b32encode(device.bin_key).decode().rstrip("=")


def qr_svg(text: str) -> str:
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    return image.to_string(encoding="unicode")


def confirm_totp(user, code: str) -> TOTPDevice | None:
    """The pending authenticator app, confirmed by a code it made; None if the code is wrong."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    if device is None or not device.verify_token(_digits(code)):
        return None
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    _record(user, "added an authenticator app")
    return device


@transaction.atomic
def new_recovery_codes(user) -> list[str]:
    """Ten new single-use codes, replacing any earlier ones; shown once, stored as given (they
    are only as strong as a TOTP code: short, throttled)."""
    device, _ = StaticDevice.objects.get_or_create(
        user=user, name=RECOVERY_DEVICE_NAME, defaults={"confirmed": True}
    )
    device.token_set.all().delete()
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODES)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    _record(user, "made new recovery codes")
    return codes


def recovery_codes_left(user) -> int:
    return StaticToken.objects.filter(device__user=user).count()


def remove(user, persistent_id: str) -> bool:
    for device in devices_for_user(user, confirmed=None):
        if device.persistent_id == persistent_id:
            device.delete()
            _record(user, f"removed {describe(device)}")
            return True
    return False


def describe(device) -> str:
    """How the person knows a device: passkeys have no name of their own, so two passkeys (or
    two apps) differ by the day they were added."""
    if isinstance(device, StaticDevice):
        return "recovery codes"
    kind = "passkey" if isinstance(device, WebAuthnCredential) else "authenticator app"
    # django-otp's created_at is nullable (devices older than the column).
    return f"{kind} added {device.created_at:%-d %b %Y}" if device.created_at else kind


def _digits(code: str) -> str:
    return "".join(code.split())


def verify_code(user, code: str):
    """The device that accepts `code`: a six-digit code is tried on the authenticator apps, any
    other on the recovery codes (a recovery code is used up). None if nothing accepts it."""
    code = _digits(code)
    if code.isdigit() and len(code) == 6:
        candidates = TOTPDevice.objects.filter(user=user, confirmed=True)
    else:
        candidates = StaticDevice.objects.filter(user=user, confirmed=True)
    for device in candidates:
        if device.verify_token(code):
            if isinstance(device, StaticDevice):
                _record(user, f"used a recovery code ({recovery_codes_left(user)} left)")
            return device
    return None


# --- passkeys -------------------------------------------------------------------------------------


def relying_party_id(request: HttpRequest | None = None) -> str:
    """Passkeys belong to the portal's host name (PORTAL_BASE_URL), whatever Host a request
    carried."""
    return urlsplit(settings.PORTAL_BASE_URL).hostname or ""


def passkeys_possible() -> bool:
    """Browsers offer WebAuthn on https:// and on localhost only, and never for an IP address."""
    parts = urlsplit(settings.PORTAL_BASE_URL)
    return parts.scheme == "https" or parts.hostname == "localhost"


class PasskeyHelper(WebAuthnHelper):
    """django-otp-webauthn's helper, with the origin read from PORTAL_BASE_URL when it is used
    (the package reads a fixed setting), and each new passkey on the audit trail (the package's
    own view saves it, so this is the one place that sees it)."""

    def get_allowed_origins(self) -> list[str]:
        parts = urlsplit(settings.PORTAL_BASE_URL)
        return [f"{parts.scheme}://{parts.netloc}"]

    def register_complete(self, user, state: dict, data: dict) -> WebAuthnCredential:
        device = super().register_complete(user=user, state=state, data=data)
        _record(user, "registered a passkey")
        return device
