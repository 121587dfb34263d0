"""The member's actions on connections: connect, reconnect, disconnect, and Microsoft's callback.
Thin: the flows live in connections.connect. The page listing a member's connections shows their
syncs too, so it lives in the portal above both apps (portal.views)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from connections import connect, connect_sessions, signin_views
from connections.browser import forget_state, remember_state, safe_return_path, states
from connections.models import Connection, EntraApp
from connections.tenancy import admin_tenant, member_tenant


def _tenant_or_403(request):
    tenant = member_tenant(request.user)
    if tenant is None:
        raise PermissionDenied("Your login belongs to no organisation in Graphport.")
    return tenant


def _my_connection(request, pk: int) -> Connection:
    # Another member's connection is a 404, as if it did not exist.
    return get_object_or_404(
        Connection.objects.select_related("app"),
        pk=pk,
        user=request.user,
        kind=Connection.Kind.DELEGATED,  # an organisation's app-only one is the admin's
        app__tenant=_tenant_or_403(request),
    )


@login_required
@require_POST
def start_connect(request, app_id: int):
    tenant = _tenant_or_403(request)
    app = get_object_or_404(EntraApp, pk=app_id, tenant=tenant, is_active=True)
    return_path = safe_return_path(request, request.POST.get("next"), reverse("connections:mine"))
    return HttpResponseRedirect(connect.start_connect(request.user, app, return_path))


@login_required
@require_POST
def reconnect(request, pk: int):
    connection = _my_connection(request, pk)
    if not connection.app.is_active:
        raise Http404("This app is no longer active.")
    return HttpResponseRedirect(
        connect.start_connect(request.user, connection.app, reverse("connections:mine"))
    )


@login_required
@require_http_methods(["GET", "POST"])
def disconnect(request, pk: int):
    connection = _my_connection(request, pk)
    if request.method == "POST":
        connect.disconnect(connection, request.user)
        return render(request, "connections/disconnected.html", {"connection": connection})
    return render(request, "connections/disconnect_confirm.html", {"connection": connection})


@login_required
@require_POST
def start_admin_consent(request, app_id: int):
    app = get_object_or_404(EntraApp, pk=app_id)
    if not (request.user.is_superuser or admin_tenant(request.user) == app.tenant):
        raise Http404("No such app.")
    return_path = reverse("admin:connections_entraapp_change", args=[app.pk])
    return HttpResponseRedirect(connect.start_admin_consent(request.user, app, return_path))


@csrf_exempt  # Microsoft posts here (form_post); `state` is the request forgery check.
@sensitive_post_parameters("code", "id_token", "state")
@require_http_methods(["GET", "POST"])
def callback(request):
    params = (request.POST if request.method == "POST" else request.GET).dict()
    browser_states = states(request)
    state = params.get("state")
    if not request.user.is_authenticated and state not in browser_states:
        if request.method == "POST" and state and "resubmitted" not in params:
            # A cross-site form_post carries no SameSite=Lax session cookie. Post the same
            # fields again from our own page, where the browser does send it.
            return render(request, "connections/resubmit.html", {"fields": params.items()})
        error = connect.FlowError("bad_state", "You are not signed in to Graphport.")
        return error_page(request, error)
    params.pop("resubmitted", None)
    if state in browser_states:
        attempt = connect.attempt_for(state)
        if attempt is not None and attempt.kind == attempt.Kind.SIGN_IN:
            try:
                return signin_views.finish(request, params, browser_states)
            except connect.FlowError as error:
                return error_page(request, error, sign_in=True)
        return _session_callback(request, params, browser_states)
    try:
        attempt, connection = connect.complete(request.user, params)
    except connect.FlowError as error:
        return error_page(request, error)
    if attempt.kind == attempt.Kind.ADMIN_CONSENT:
        messages.success(request, "Admin consent granted and verified.")
    else:
        name = connection.user_principal_name or connection.display_name
        messages.success(request, f"Connected {name}.")
    return redirect(safe_return_path(request, attempt.return_path, reverse("connections:mine")))


@require_http_methods(["GET"])
def open_session(request, token: str):
    """A connect session's link: straight to Microsoft, the attempt bound to this browser."""
    try:
        session = connect_sessions.open_link(token)
    except connect_sessions.Unusable as exc:
        return render(
            request, "connections/session_unusable.html", {"reason": str(exc)}, status=410
        )
    state, authorize_url = connect.start_session_connect(session)
    remember_state(request, state)
    return HttpResponseRedirect(authorize_url)


def _session_callback(request, params: dict[str, str], browser_states: frozenset[str]):
    """The end of a connect session: back to the customer's return URL, with the outcome."""
    forget_state(request, params.get("state", ""))
    try:
        attempt, connection = connect.complete(None, params, browser_states)
    except connect.FlowError as error:
        attempt = connect.attempt_for(params.get("state", ""))
        if error.kind == "bad_state" or attempt is None or attempt.connect_session is None:
            # Not this session's attempt to end (a replay, an expired sign-in): its outcome,
            # perhaps already a success, stays as it is.
            return error_page(request, error)
        return HttpResponseRedirect(
            connect_sessions.finish(attempt.connect_session, None, error.kind)
        )
    return HttpResponseRedirect(connect_sessions.finish(attempt.connect_session, connection))


def error_page(request, error: connect.FlowError, sign_in: bool = False):
    app = error.app
    can_consent = (
        app is not None
        and app.use_application_permissions  # admin consent is offered for those apps only
        and request.user.is_authenticated
        and (request.user.is_superuser or admin_tenant(request.user) == app.tenant)
    )
    return render(
        request,
        "connections/callback_error.html",
        {"error": error, "app": app, "can_consent": can_consent, "sign_in": sign_in},
        status=error.status,
    )
