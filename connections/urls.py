from django.urls import path

from connections import views

app_name = "connections"

urlpatterns = [
    path("callback/", views.callback, name="callback"),
]
