"""Signing in with a password, and choosing a new one by e-mail: Django's own views and forms,
with budgets in Redis (core.ratelimit) that every web process shares.

Sign-ins. Failures are counted per username (LOGIN_FAILURES_PER_ACCOUNT) and per address
(LOGIN_FAILURES_PER_ADDRESS) in a fixed window of LOGIN_WINDOW_SECONDS. Once either budget is
spent, sign-ins are refused before the password is checked, so a right guess gains nothing
either. A username that names no account is counted all the same: the refusal must not tell
which accounts exist. A successful sign-in resets nothing: an attacker who knows one password
could otherwise sign in to their own account between guesses and never run out, on the account
budget or the address one. The price is that anyone can lock an account out for a window by
failing on purpose; the window is short, and a password manager's owner rarely fails ten times.

Password resets. Requests are counted per address (PASSWORD_RESETS_PER_ADDRESS) and per e-mail
address (PASSWORD_RESETS_PER_EMAIL) in an hour, whether or not an account has that e-mail, and
the page after a request reads the same either way. Django's form mails only active accounts
with a usable password: people who sign in with Microsoft only have none to reset.

Without Redis nothing is counted and nothing refused (core.ratelimit.over_budget).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import forms as auth_forms
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse

from core import keys, ratelimit
from core.formatting import plural

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """Attempts allowed under one Redis key in a fixed window, and the refusal's first words."""

    key: str
    limit: int
    window_seconds: int
    refusal: str

    # over_budget answers once a count passes the limit it is given; a budget of `limit`
    # attempts is spent when `limit` are counted, so both ask about `limit - 1`.
    def spent(self) -> float | None:
        """The seconds until the window ends when the budget is spent, else None."""
        return ratelimit.over_budget(self.key, self.limit - 1, self.window_seconds, cost=0)

    def count(self) -> float | None:
        """Count one attempt; then as `spent`."""
        return ratelimit.over_budget(self.key, self.limit - 1, self.window_seconds)

    def error(self, wait: float) -> ValidationError:
        minutes = max(math.ceil(wait / 60), 1)
        return ValidationError(
            f"{self.refusal}; try again in {plural(minutes, 'minute')}.", code="too_many"
        )


def _address(request: HttpRequest) -> str:
    # The trusted address, an IPv6 client by its /64: one customer line gets a whole /64, and
    # a budget per single address would give an attacker on it endless fresh ones.
    return ratelimit.sender(request)


def _first_spent(budgets: Sequence[Budget]) -> tuple[Budget, float] | None:
    for budget in budgets:
        wait = budget.spent()
        if wait is not None:
            return budget, wait
    return None


def _who(username: str) -> str:
    """A username for the log if it names an account; anything else may be a password typed
    into the wrong field, and stays out of the log."""
    User = get_user_model()
    if User._default_manager.filter(**{User.USERNAME_FIELD: username}).exists():
        return f"user {username}"
    return "an unknown username"


class _Budgeted:
    """A form refused while one of its budgets is spent."""

    #: the seconds to wait, once refused
    retry_in: float | None = None

    def _refuse_if(self, spent: tuple[Budget, float] | None) -> None:
        if spent is not None:
            budget, self.retry_in = spent
            raise budget.error(self.retry_in)


class LoginForm(_Budgeted, auth_forms.AuthenticationForm):
    """Django's sign-in form, refused once the account or the address has spent its failures."""

    def clean(self):
        username = self.cleaned_data.get("username")
        if username is None or not self.cleaned_data.get("password"):
            return super().clean()  # a field is missing: no password is checked
        address = _address(self.request)
        budgets = (
            Budget(
                keys.login_failures_account(username),
                settings.LOGIN_FAILURES_PER_ACCOUNT,
                settings.LOGIN_WINDOW_SECONDS,
                "Too many failed sign-ins for this account",
            ),
            Budget(
                keys.login_failures_address(address),
                settings.LOGIN_FAILURES_PER_ADDRESS,
                settings.LOGIN_WINDOW_SECONDS,
                "Too many failed sign-ins from your network",
            ),
        )
        # A refused attempt is not counted (the budget is spent already) nor logged (a flood would
        # only lengthen the log).
        self._refuse_if(_first_spent(budgets))
        try:
            return super().clean()
        except ValidationError:
            if self.user_cache is not None:
                raise  # the right password, for a login not allowed here (the admin's staff rule)
            who = _who(username)
            logger.warning("Failed sign-in for %s from %s", who, address)
            # Counted against every budget; if this failure spent one, the refusal says so now.
            waits = [(budget, budget.count()) for budget in budgets]
            spent = next(((b, wait) for b, wait in waits if wait is not None), None)
            if spent is not None:
                logger.warning(
                    "%s (%s from %s): refused for %d s", spent[0].refusal, who, address, spent[1]
                )
            self._refuse_if(spent)
            raise


class AdminLoginForm(LoginForm, AdminAuthenticationForm):
    """The admin's sign-in form (staff only), on the same budgets as the portal's."""


def answer_429_when_refused(response: HttpResponse) -> HttpResponse:
    """A login or reset page answered 429 with Retry-After when its form was refused for too
    many attempts: the page still shows why, and scripts and proxy logs see it too."""
    form = (getattr(response, "context_data", None) or {}).get("form")
    if form is not None and form.retry_in is not None:
        response.status_code = 429
        response["Retry-After"] = str(max(math.ceil(form.retry_in), 1))
    return response


class LoginView(auth_views.LoginView):
    authentication_form = LoginForm

    def form_invalid(self, form):
        return answer_429_when_refused(super().form_invalid(form))


class PasswordResetForm(_Budgeted, auth_forms.PasswordResetForm):
    """Django's reset request form, counted per address and per e-mail address."""

    def __init__(self, *args, address: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.address = address

    def clean(self):
        cleaned = super().clean()
        email = cleaned.get("email")
        if email:
            window = settings.PASSWORD_RESET_WINDOW_SECONDS
            budgets = (
                Budget(
                    keys.password_resets_address(self.address),
                    settings.PASSWORD_RESETS_PER_ADDRESS,
                    window,
                    "Too many password reset requests from your network",
                ),
                Budget(
                    keys.password_resets_email(email),
                    settings.PASSWORD_RESETS_PER_EMAIL,
                    window,
                    "Too many password reset requests for this e-mail address",
                ),
            )
            self._refuse_if(_first_spent(budgets))
            for budget in budgets:
                budget.count()
        return cleaned


class PasswordResetView(auth_views.PasswordResetView):
    form_class = PasswordResetForm

    @property
    def extra_email_context(self) -> dict:
        # The link points at the portal's public origin, as every notice's does, rather than at
        # whatever Host the request carried.
        return {
            "portal_base_url": settings.PORTAL_BASE_URL,
            "valid_for": plural(settings.PASSWORD_RESET_TIMEOUT // 3600, "hour"),
        }

    def get_form_kwargs(self) -> dict:
        return {**super().get_form_kwargs(), "address": _address(self.request)}

    def form_invalid(self, form):
        return answer_429_when_refused(super().form_invalid(form))
