from celery import shared_task


@shared_task
def dispatch_due_syncs() -> int:
    """Enqueue due sync jobs. Sync jobs arrive with the sync engine (issue 6): none yet."""
    return 0


@shared_task
def renew_subscriptions() -> int:
    """Renew Graph subscriptions. Subscriptions arrive with change notifications (issue 7)."""
    return 0
