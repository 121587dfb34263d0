"""The admin, scoped per tenant (connections.tenancy): one module per area."""

from django.contrib import admin

from connections.admin import (  # noqa: F401 (registrations)
    api,
    apps,
    audit,
    connections,
    people,
    tenants,
    webhooks,
)

admin.site.site_header = "Graphport administration"
admin.site.site_title = "Graphport"
