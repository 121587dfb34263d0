"""The OpenAPI schema: valid, with every endpoint in it; its docs served without a CDN."""

from __future__ import annotations

import io
import re

import pytest
import yaml
from django.core.management import call_command
from django.urls import URLPattern

from portal.api import urls as api_urls

pytestmark = pytest.mark.django_db

NOT_ENDPOINTS = {"schema", "docs", None}


def schema_paths() -> set[str]:
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    return set(yaml.safe_load(out.getvalue())["paths"])


def as_openapi(pattern: URLPattern) -> str:
    """The route with its parameters as OpenAPI writes them, names left out (drf-spectacular
    calls a `pk` `id`)."""
    return "/api/v1/" + re.sub(r"<[^>]+>", "{}", str(pattern.pattern))


def test_the_schema_is_valid_and_has_every_endpoint():
    paths = {re.sub(r"{[^}]+}", "{}", path) for path in schema_paths()}
    endpoints = {as_openapi(p) for p in api_urls.urlpatterns if p.name not in NOT_ENDPOINTS}
    assert endpoints, "no endpoints found"
    assert endpoints <= paths, endpoints - paths


def test_the_schema_and_docs_are_served_with_local_assets(client):
    schema = client.get("/api/v1/schema/")
    assert schema.status_code == 200 and b"openapi" in schema.content
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert sources and not [s for s in sources if s.startswith(("http:", "https:", "//"))]
