from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class GraphsyncConfig(AppConfig):
    name = "graphsync"
    verbose_name = "Microsoft Graph sync"

    def ready(self) -> None:
        # Imported once the apps are loaded (they use models): Django's way, not a cycle.
        from connections import signals
        from graphsync import budgets, receivers

        try:
            budgets.check_overrides(settings.GRAPH_BUDGETS)
        except ValueError as exc:
            raise ImproperlyConfigured(f"GRAPH_BUDGETS_JSON: {exc}") from None

        signals.connected.connect(receivers.start_syncing, dispatch_uid="graphsync-connected")
        signals.disconnecting.connect(
            receivers.drop_subscriptions, dispatch_uid="graphsync-disconnecting"
        )
        signals.disconnected.connect(receivers.stop_syncing, dispatch_uid="graphsync-disconnected")
