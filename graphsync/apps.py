from django.apps import AppConfig


class GraphsyncConfig(AppConfig):
    name = "graphsync"
    verbose_name = "Microsoft Graph sync"
