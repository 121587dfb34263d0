from django.contrib import admin
from django.urls import include, path

from connections.views import home
from graphsync import webhooks
from portal import views

urlpatterns = [
    path("", home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("connections/", include("connections.urls")),
    path("sync/", include("graphsync.urls")),
    # Microsoft Graph's webhooks (graphsync.subscriptions builds these URLs).
    path("graph/notifications/", webhooks.changes, name="graph-notifications"),
    path("graph/lifecycle/", webhooks.lifecycle, name="graph-lifecycle"),
]
