from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from connections import expiry
from connections.models import Connection

REFRESH_AHEAD = timedelta(minutes=5)


@shared_task
def dispatch_token_refreshes() -> int:
    """Find delegated connections whose access token expires soon; the refresh itself is
    built in the token-lifecycle work (issue 5). Returns how many are due."""
    soon = timezone.now() + REFRESH_AHEAD
    return Connection.objects.filter(
        status=Connection.Status.ACTIVE, access_token_expires_at__lte=soon
    ).count()


@shared_task
def warn_expiring_secrets() -> int:
    return expiry.warn_expiring_secrets()
