"""Scope strings as the v2 endpoint reads them: OIDC scopes, Graph scopes, `.default`."""

from __future__ import annotations

from dataclasses import dataclass, field

from emulator.directory import GRAPH_APP_ID
from emulator.errors import AadError

OIDC = ("openid", "profile", "email", "offline_access")
GRAPH_RESOURCES = (
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
    GRAPH_APP_ID,
)


@dataclass
class Scopes:
    oidc: list[str] = field(default_factory=list)
    graph: list[str] = field(default_factory=list)
    default: bool = False
    raw: str = ""

    @property
    def offline(self) -> bool:
        return "offline_access" in self.oidc

    def granted_string(self, graph: list[str]) -> str:
        # Microsoft leaves offline_access out of the granted scope (oauthlib then complains).
        return " ".join([*graph, *(s for s in self.oidc if s != "offline_access")])


def is_graph(resource: str, graph_base: str) -> bool:
    resource = resource.rstrip("/").lower()
    return resource in GRAPH_RESOURCES or (bool(graph_base) and resource == graph_base.lower())


def parse(raw: str | None, graph_base: str) -> Scopes:
    """Split a scope string; AADSTS70011 / 700022 for the combinations Microsoft refuses."""
    scopes = Scopes(raw=raw or "")
    resources: set[str] = set()
    for item in (raw or "").split():
        if item.lower() in OIDC:
            if item.lower() not in scopes.oidc:
                scopes.oidc.append(item.lower())
            continue
        resource, _, name = item.rpartition("/")
        if resource and not is_graph(resource, graph_base):
            resources.add(resource.lower())
            continue
        resources.add("graph")
        if name == ".default":
            scopes.default = True
        elif name and name not in scopes.graph:
            scopes.graph.append(name)
    if len(resources) > 1:
        raise AadError(
            "invalid_scope",
            700022,
            "The provided value for the input parameter scope is not valid because it contains "
            "more than one resource. Scope " + (raw or "") + " is not valid.",
        )
    if resources and "graph" not in resources:
        resource = next(iter(resources))
        raise AadError(
            "invalid_resource",
            500011,
            f"The resource principal named {resource} was not found in the tenant. This can "
            "happen if the application has not been installed by the administrator of the tenant.",
        )
    if scopes.default and scopes.graph:
        raise AadError(
            "invalid_scope",
            70011,
            "The provided request must include a 'scope' input parameter. The provided value for "
            f"the input parameter 'scope' is not valid. The scope '{raw}' is not valid. static "
            "scope limit exceeded.",
        )
    return scopes
