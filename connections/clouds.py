"""Microsoft's national clouds and the URLs an app registration derives from them
(docs/microsoft.md, "Endpoints and clouds")."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from django.db import models


class Cloud(models.TextChoices):
    GLOBAL = "global", "Global (also Microsoft 365 GCC)"
    US_GOV_L4 = "usgov_l4", "US Government L4 (GCC High)"
    US_GOV_L5 = "usgov_l5", "US Government L5 (DoD)"
    CHINA = "china", "China (operated by 21Vianet)"
    CUSTOM = "custom", "Custom login and Graph URLs"


@dataclass(frozen=True)
class Hosts:
    login: str
    graph: str


NATIONAL_CLOUDS = {
    Cloud.GLOBAL: Hosts("https://login.microsoftonline.com", "https://graph.microsoft.com"),
    Cloud.US_GOV_L4: Hosts("https://login.microsoftonline.us", "https://graph.microsoft.us"),
    Cloud.US_GOV_L5: Hosts("https://login.microsoftonline.us", "https://dod-graph.microsoft.us"),
    Cloud.CHINA: Hosts("https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"),
}

MULTI_TENANT_AUTHORITIES = ("common", "organizations", "consumers")
CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def is_guid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except (ValueError, AttributeError, TypeError):
        return False


def is_domain(value: str) -> bool:
    return bool(_DOMAIN.match(value.lower()))


def is_specific_tenant(authority: str) -> bool:
    """A tenant GUID or verified domain: what client credentials and admin consent need."""
    return authority not in MULTI_TENANT_AUTHORITIES
