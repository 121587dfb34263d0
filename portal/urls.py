from django.contrib import admin
from django.urls import include, path

from connections import urls as connections_urls
from graphsync import webhooks
from portal import login, metrics, views

# The member's connections page joins the connect flow's URLs under one namespace: it shows
# syncs as well as connections, so it is the portal's, not the connections app's.
member_connections = (
    [path("", views.my_connections, name="mine"), *connections_urls.urlpatterns],
    connections_urls.app_name,
)

urlpatterns = [
    path("", views.home, name="home"),
    # Answered by portal.middleware.ProbeMiddleware before the host and HTTPS checks; named here
    # for reverse() and the metrics' view label.
    path("livez", views.livez, name="livez"),
    path("healthz", views.healthz, name="healthz"),
    # Prometheus's scrape, with a bearer token (portal.metrics).
    path("metrics", metrics.endpoint, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("connections.signin_urls")),
    path("accounts/two-factor/", include("portal.twofactor_urls")),
    # Django's own login and reset request, with budgets (portal.login); the rest is Django's.
    path("accounts/login/", login.LoginView.as_view(), name="login"),
    path("accounts/password_reset/", login.PasswordResetView.as_view(), name="password_reset"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("connections/", include(member_connections)),
    path("sync/", include("graphsync.urls")),
    path("api/v1/", include("portal.api.urls")),
    # Microsoft Graph's webhooks (graphsync.subscriptions builds these URLs).
    path("graph/notifications/", webhooks.changes, name="graph-notifications"),
    path("graph/lifecycle/", webhooks.lifecycle, name="graph-lifecycle"),
]
