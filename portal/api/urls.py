from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from portal.api import problems, views

app_name = "api"

urlpatterns = [
    path("connections", views.ConnectionList.as_view(), name="connections"),
    path("connections/<int:pk>", views.ConnectionDetail.as_view(), name="connection"),
    path(
        "connections/<int:pk>/disconnect",
        views.ConnectionDisconnect.as_view(),
        name="disconnect",
    ),
    path("connections/<int:pk>/jobs", views.ConnectionJobs.as_view(), name="connection-jobs"),
    path("jobs/<int:pk>/run", views.JobRun.as_view(), name="job-run"),
    path("jobs/<int:pk>/resync", views.JobResync.as_view(), name="job-resync"),
    path("connect-sessions", views.ConnectSessions.as_view(), name="connect-sessions"),
    path("records", views.Records.as_view(), name="records"),
    path("proxy/<int:pk>/<path:path>", views.Proxy.as_view(), name="proxy"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    re_path(r"^(?P<rest>.*)$", problems.unknown_endpoint),
]
