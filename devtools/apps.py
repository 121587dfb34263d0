from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    """Development commands (`manage.py runportal`); installed by the settings only with DEBUG."""

    name = "devtools"
    verbose_name = "Graphport development tools"
