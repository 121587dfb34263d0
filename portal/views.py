"""The portal's own pages: the member's home (their connections with what each syncs, drawn from
both apps) and the health probes (answered by portal.middleware.ProbeMiddleware)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from connections import connect, signin
from connections.models import Connection, EntraApp
from connections.tenancy import admin_tenant, member_tenant
from graphsync import status
from portal import health


@login_required
def home(request):
    return redirect("connections:mine")


@login_required
def my_connections(request):
    tenant = member_tenant(request.user)
    if tenant is None:
        return render(request, "connections/no_tenant.html", status=403)
    apps = EntraApp.objects.filter(tenant=tenant, is_active=True).order_by("name")
    mine = list(
        # Their own accounts: an app-only connection reads the whole organisation, which is
        # the admin's to see, whoever granted the consent.
        Connection.objects.filter(
            user=request.user, app__tenant=tenant, kind=Connection.Kind.DELEGATED
        )
        .select_related("app")
        .order_by("app__name", "user_principal_name")
    )
    synced = status.of_connections([c.pk for c in mine])
    rows = [
        {
            "connection": c,
            "missing": connect.missing_scopes(c.app, c.granted_scopes),
            "sync": synced.get(c.pk, []),
        }
        for c in mine
    ]
    return render(
        request,
        "connections/mine.html",
        {
            "tenant": tenant,
            "apps": apps,
            "rows": rows,
            "is_tenant_admin": admin_tenant(request.user) == tenant,
            "sign_in_accounts": list(request.user.microsoft_identities.all()),
            "can_link": signin.app_for(tenant) is not None,
        },
    )


@never_cache
@require_GET
def healthz(request):
    """Readiness: the database, Redis and a Celery worker, checked at most once a
    second by this process (portal.health), so polling it costs nothing and never waits."""
    checks = health.status()
    down = sorted(name for name, check in checks.items() if check["status"] != "up")
    body = {"status": "ok" if not down else "down", "down": down, "checks": checks}
    return JsonResponse(body, status=503 if down else 200)


@never_cache
@require_GET
def livez(request):
    """Liveness: the process answers. Touches nothing (no database, no Redis, no session), so
    it says nothing but that: restart the process when it stops answering."""
    return HttpResponse("ok", content_type="text/plain; charset=utf-8")
