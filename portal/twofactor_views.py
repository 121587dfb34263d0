"""The two-factor pages: set up (authenticator app, passkeys, recovery codes) and verify. Thin
views over portal.twofactor; the passkey ceremonies are django-otp-webauthn's own endpoints."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST
from django_otp import login as otp_login

from connections.browser import safe_return_path
from portal import twofactor


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=32,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True}),
    )


def _next(request) -> str:
    return safe_return_path(request, request.POST.get("next") or request.GET.get("next"), "/")


def _verify_first(next_path: str):
    return redirect(twofactor.page_url("two-factor-verify", next_path))


@never_cache
@sensitive_post_parameters("code")
@login_required
@require_http_methods(["GET", "POST"])
def setup(request):
    """The person's second factors; adding an authenticator app is confirmed with a code. Once
    there is one, changes need a session that used it: a password alone must not add a factor
    of its own."""
    user = request.user
    if twofactor.has_device(user) and not twofactor.verified(request):
        return _verify_first(request.get_full_path())
    form = CodeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        device = twofactor.confirm_totp(user, form.cleaned_data["code"])
        if device is not None:
            if not twofactor.verified(request):
                otp_login(request, device)
            messages.success(request, "Authenticator app added.")
            return redirect(request.get_full_path())
        form.add_error("code", "That code is not right (or has expired): try the next one.")
    pending = twofactor.pending_totp(user)
    return render(
        request,
        "twofactor/setup.html",
        {
            "devices": [(d, twofactor.describe(d)) for d in twofactor.devices(user)],
            "required": twofactor.required(user),
            "form": form,
            "qr": twofactor.qr_svg(pending.config_url),
            "secret": twofactor.totp_secret(pending),
            "passkeys": twofactor.passkeys_possible(),
            "recovery_left": twofactor.recovery_codes_left(user),
            "next": _next(request),
        },
    )


@never_cache
@login_required
@require_POST
def recovery_codes(request):
    """New recovery codes, shown once: a spare for an app or passkey, so one of those first."""
    if not twofactor.has_device(request.user):
        return redirect("two-factor-setup")
    if not twofactor.verified(request):
        return _verify_first(reverse("two-factor-setup"))
    codes = twofactor.new_recovery_codes(request.user)
    return render(request, "twofactor/recovery_codes.html", {"codes": codes})


@login_required
@require_POST
def remove(request):
    if not twofactor.verified(request):
        return _verify_first(reverse("two-factor-setup"))
    if twofactor.remove(request.user, request.POST.get("device", "")):
        messages.success(request, "Removed.")
    return redirect("two-factor-setup")


@never_cache
@sensitive_post_parameters("code")
@login_required
@require_http_methods(["GET", "POST"])
def verify(request):
    """The second step of signing in: a code from the app, a recovery code, or a passkey."""
    form = CodeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        device = twofactor.verify_code(request.user, form.cleaned_data["code"])
        if device is not None:
            otp_login(request, device)
            return redirect(_next(request))
        form.add_error("code", "That code is not right; each wrong one makes the next wait.")
    return render(
        request,
        "twofactor/verify.html",
        {"form": form, "passkeys": twofactor.passkeys_possible(), "next": _next(request)},
    )
