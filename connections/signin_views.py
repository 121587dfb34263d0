"""Sign in with Microsoft, an organisation's own sign-in link, and invitations: thin views over
connections.signin and connections.invitations. Microsoft's answer comes back to the connect
flow's callback (connections.views), which hands sign-ins to `finish`."""

from __future__ import annotations

import math

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login, password_validation
from django.contrib.auth.decorators import login_required
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from connections import invitations, signin
from connections.browser import forget_state, remember_state, safe_return_path
from connections.models import Tenant
from core import keys, ratelimit

BACKEND = "django.contrib.auth.backends.ModelBackend"
# Each start stores an authorization attempt: generous for people and their tabs, short of a
# flood that would fill the table.
STARTS_PER_ADDRESS = 60
STARTS_WINDOW_SECONDS = 600


def offered(request) -> dict:
    """Template context: whether the sign-in pages show Sign in with Microsoft."""
    return {"microsoft_signin": bool(settings.SIGNIN_CLIENT_ID)}


def _next(request) -> str:
    return safe_return_path(request, request.POST.get("next") or request.GET.get("next"), "/")


def _go(request, app, **options):
    wait = ratelimit.over_budget(
        keys.signin_starts(ratelimit.sender(request)), STARTS_PER_ADDRESS, STARTS_WINDOW_SECONDS
    )
    if wait is not None:
        response = render(request, "registration/signin_busy.html", status=429)
        response["Retry-After"] = str(math.ceil(wait))
        return response
    try:
        state, url = signin.start(app, return_path=_next(request), **options)
    except signin.NotOffered as exc:
        raise Http404(str(exc)) from None
    remember_state(request, state)
    return HttpResponseRedirect(url)


@require_POST
def microsoft(request):
    """The sign-in pages' button: the platform's sign-in app."""
    return _go(request, None)


@require_http_methods(["GET", "POST"])
def organisation(request, key: str):
    """An organisation's own sign-in link: its own app when it chose one (and then, if that app
    syncs data, sign in and connect with one consent), else the platform's."""
    tenant = get_object_or_404(Tenant.objects.select_related("signin_app"), signin_key=key)
    app = signin.app_for(tenant)
    if app is None:
        raise Http404("Sign in with Microsoft is not configured for this organisation.")
    own = app.pk is not None
    if request.method == "POST":
        return _go(request, app, connect_too=own and request.POST.get("connect") == "on")
    return render(
        request,
        "registration/organisation_signin.html",
        {"tenant": tenant, "can_connect": own, "next": _next(request)},
    )


@login_required
@require_POST
def link(request):
    """Add Sign in with Microsoft to the signed-in login."""
    app = signin.app_for(getattr(getattr(request.user, "membership", None), "tenant", None))
    return _go(request, app, link_to=request.user)


def finish(request, params: dict[str, str], browser_states: frozenset[str]):
    """The callback of a sign-in (connections.views.callback, which shows a FlowError)."""
    forget_state(request, params.get("state", ""))
    current = request.user if request.user.is_authenticated else None
    result = signin.complete(params, browser_states, current)
    if current is None or current.pk != result.user.pk:
        login(request, result.user, backend=BACKEND)
    if result.strong:
        request.session[signin.MICROSOFT_MFA_SESSION_KEY] = True
    if result.linked:
        messages.success(request, "Your Microsoft account now signs you in.")
    elif result.tenant is not None and (result.joined or result.accepted):
        messages.success(request, f"Welcome to {result.tenant}.")
    if result.connection is not None:
        name = result.connection.user_principal_name or result.connection.display_name
        messages.success(request, f"Connected {name}.")
    if result.connect_problem:
        messages.error(request, result.connect_problem)
    return redirect(result.return_path or "/")


# --- invitations ---------------------------------------------------------------------------------


class AcceptForm(forms.Form):
    username = forms.CharField(max_length=150)
    password1 = forms.CharField(label="Password", widget=forms.PasswordInput, strip=False)
    password2 = forms.CharField(label="Password again", widget=forms.PasswordInput, strip=False)

    def __init__(self, *args, email: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.email = email
        self.fields["username"].validators = [UnicodeUsernameValidator()]

    def clean_username(self) -> str:
        username = self.cleaned_data["username"].strip()
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise forms.ValidationError("This username is not available: choose another.")
        return username

    def clean(self):
        cleaned = super().clean()
        first, second = cleaned.get("password1"), cleaned.get("password2")
        if first and second and first != second:
            self.add_error("password2", "The two passwords differ.")
        elif first:
            user = get_user_model()(username=cleaned.get("username", ""), email=self.email)
            try:
                password_validation.validate_password(first, user)
            except forms.ValidationError as exc:
                self.add_error("password1", exc)
        return cleaned


@sensitive_post_parameters("password1", "password2")
@require_http_methods(["GET", "POST"])
def invitation(request, token: str):
    """An invitation's link: accept with Sign in with Microsoft, or with a new password."""
    try:
        found = invitations.find(token)
    except invitations.Unusable as exc:
        return render(request, "registration/invitation.html", {"unusable": str(exc)}, status=410)
    app = signin.app_for(found.tenant)
    if request.method == "POST" and request.POST.get("with") == "microsoft":
        if app is None:
            raise Http404("Sign in with Microsoft is not configured here.")
        own = app.pk is not None
        return _go(
            request,
            app,
            invitation=found,
            connect_too=own and request.POST.get("connect") == "on",
        )
    form = AcceptForm(request.POST if request.method == "POST" else None, email=found.email)
    if request.method == "POST" and form.is_valid():
        try:
            user = invitations.accept_with_password(
                token, form.cleaned_data["username"], form.cleaned_data["password1"]
            )
        except invitations.Unusable as exc:
            return render(
                request, "registration/invitation.html", {"unusable": str(exc)}, status=410
            )
        login(request, user, backend=BACKEND)
        messages.success(request, f"Welcome to {found.tenant}.")
        return redirect(reverse("admin:index") if user.is_staff else "/")
    return render(
        request,
        "registration/invitation.html",
        {
            "invitation": found,
            "form": form,
            "microsoft": app is not None,
            "can_connect": app is not None and app.pk is not None,
        },
    )
