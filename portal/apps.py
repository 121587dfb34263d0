from django.apps import AppConfig
from django.contrib import admin
from django.contrib.admin import apps as admin_apps


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Graphport"

    def ready(self) -> None:
        # portal.admin imports models, which exist only once the apps are loaded.
        from portal.admin import register_second_factors

        register_second_factors(admin.site)


class PortalAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with Graphport's site (the dashboard on the index) as `admin.site`.

    Named in INSTALLED_APPS in place of "django.contrib.admin"; `default = False` keeps Django
    from taking it for the portal app's own configuration (there are two in this module)."""

    default = False
    default_site = "portal.admin.GraphportAdminSite"
