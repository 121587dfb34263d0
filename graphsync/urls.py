from django.urls import path

from graphsync import views

app_name = "graphsync"

urlpatterns = [
    path("connections/<int:pk>/status.json", views.connection_status, name="status"),
    path("connections/<int:pk>/records/", views.records, name="records"),
    path("records/<int:pk>/", views.record_detail, name="record"),
]
