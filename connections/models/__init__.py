from connections.models.api import ApiKey, ConnectSession
from connections.models.apps import (
    EXPIRY_WARNING_DAYS,
    SECRET_WARNING_DAYS,
    AppCertificate,
    ClientSecret,
    EntraApp,
    validate_authority,
    validate_guid,
)
from connections.models.audit import AuditEvent
from connections.models.connections import AuthorizationAttempt, Connection
from connections.models.people import Invitation, MicrosoftIdentity
from connections.models.tenants import Member, Membership, Tenant
from connections.models.webhooks import (
    DeliveryAttempt,
    EventType,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "SECRET_WARNING_DAYS",
    "ApiKey",
    "AppCertificate",
    "AuditEvent",
    "AuthorizationAttempt",
    "ClientSecret",
    "ConnectSession",
    "Connection",
    "DeliveryAttempt",
    "EntraApp",
    "EventType",
    "Invitation",
    "Member",
    "Membership",
    "MicrosoftIdentity",
    "Tenant",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "validate_authority",
    "validate_guid",
]
