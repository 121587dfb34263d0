"""Sign in with Microsoft and invitations, under /accounts/ beside Django's own login pages."""

from django.urls import path

from connections import signin_views

urlpatterns = [
    path("microsoft/", signin_views.microsoft, name="signin-microsoft"),
    path("microsoft/link/", signin_views.link, name="signin-link"),
    path("microsoft/<str:key>/", signin_views.organisation, name="signin-organisation"),
    path("invitations/<str:token>/", signin_views.invitation, name="invitation"),
]
