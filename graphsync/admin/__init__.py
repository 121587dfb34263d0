"""Sync jobs, runs and records in the admin, scoped per tenant (connections.tenancy): one module per
model. Records and runs are history: read-only for everyone. Jobs come from connections
(graphsync.jobs) and are never added or deleted here; operators change their schedule and switch
them on and off. Organisation-wide syncs are set up here; their members are read-only."""

from graphsync.admin import jobs, orgsync, records, runs, subscriptions  # noqa: F401 (registrations)
