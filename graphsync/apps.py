from django.apps import AppConfig


class GraphsyncConfig(AppConfig):
    name = "graphsync"
    verbose_name = "Microsoft Graph sync"

    def ready(self) -> None:
        from connections import signals
        from graphsync import receivers

        signals.connected.connect(receivers.start_syncing, dispatch_uid="graphsync-connected")
        signals.disconnecting.connect(
            receivers.drop_subscriptions, dispatch_uid="graphsync-disconnecting"
        )
        signals.disconnected.connect(receivers.stop_syncing, dispatch_uid="graphsync-disconnected")
