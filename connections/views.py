from django.http import HttpResponse
from django.views.decorators.http import require_http_methods


@require_http_methods(["GET", "POST"])
def callback(request):
    """Microsoft's redirect target for the connect and admin-consent flows."""
    return HttpResponse("The connect flow is not available yet.", status=503)
