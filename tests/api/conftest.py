"""Calling the customer API as a tenant's backend would: with an API key."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from connections import apikeys


class Api:
    """Django's test client with a key in `Authorization: Bearer`."""

    def __init__(self, raw: str | None):
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {raw}"} if raw else {}

    def get(self, path: str, params: dict | None = None, **headers):
        return self.client.get(path, params or {}, headers={**self.headers, **headers})

    def post(self, path: str, body=None, **headers):
        data = json.dumps(body) if body is not None else ""
        return self.client.post(
            path, data, content_type="application/json", headers={**self.headers, **headers}
        )

    def call(self, method: str, path: str, body: bytes = b"", **headers):
        return self.client.generic(
            method, path, body, content_type="application/json", headers={**self.headers, **headers}
        )


def key_for(tenant, write: bool = True, **fields) -> Api:
    _, raw = apikeys.issue(tenant, "tests", write=write, **fields)
    return Api(raw)


@pytest.fixture
def acme_api(acme) -> Api:
    return key_for(acme.tenant)


@pytest.fixture
def globex_api(globex) -> Api:
    return key_for(globex.tenant)


def problem(response, status: int, slug: str) -> dict:
    """The response's problem document, checked to be one of `slug` with `status`."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json", response["Content-Type"]
    body = response.json()
    assert body["type"] == f"/api/v1/problems/{slug}", body
    assert body["status"] == status and body["title"] and body["detail"]
    return body
