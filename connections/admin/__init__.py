"""The admin, scoped per tenant (connections.tenancy): one module per area."""

from django.contrib import admin

from connections.admin import apps, audit, connections, tenants  # noqa: F401 (registrations)

admin.site.site_header = "Graphport administration"
admin.site.site_title = "Graphport"
