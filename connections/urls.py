from django.urls import path

from connections import views

app_name = "connections"

urlpatterns = [
    path("callback/", views.callback, name="callback"),
    path("session/<str:token>/", views.open_session, name="session"),
    path("apps/<int:app_id>/connect/", views.start_connect, name="connect"),
    path("apps/<int:app_id>/admin-consent/", views.start_admin_consent, name="admin_consent"),
    path("<int:pk>/reconnect/", views.reconnect, name="reconnect"),
    path("<int:pk>/disconnect/", views.disconnect, name="disconnect"),
]
