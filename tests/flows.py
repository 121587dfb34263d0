"""Driving the connect flow with Django's test client and the emulator's scripted sign-in."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from django.urls import reverse

from connections.models import Connection
from tests.conftest import ADELE


def press_connect(client, member, app) -> str:
    client.force_login(member)
    response = client.post(reverse("connections:connect", args=[app.pk]))
    assert response.status_code == 302
    return response["Location"]


def follow_back(client, outcome: dict):
    """Deliver what the emulator's sign-in page sent the browser back with."""
    if outcome["type"] == "form_post":
        return client.post(urlsplit(outcome["action"]).path, outcome["fields"])
    assert outcome["type"] == "redirect", outcome
    url = urlsplit(outcome["url"])
    return client.get(url.path + "?" + url.query)


def connect(client, microsoft, member, app, user=ADELE, action="accept"):
    authorize_url = press_connect(client, member, app)
    return follow_back(client, microsoft.control.sign_in(authorize_url, user, action=action))


def connected(client, microsoft, member, app, user=ADELE) -> Connection:
    response = connect(client, microsoft, member, app, user)
    assert response.status_code == 302, response.content
    return Connection.objects.get(app=app, ms_object_id=user)


def wait_for(condition, timeout: float = 20.0, every: float = 0.1):
    """Poll until `condition()` is truthy (for work done by workers and live servers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s")


def sign_in(client, microsoft, user=ADELE, path=None, data=None, mfa=True):
    """Press a Sign in with Microsoft button (by default the sign-in page's), pick `user` at the
    emulator, and deliver Microsoft's answer."""
    response = client.post(path or reverse("signin-microsoft"), data or {})
    assert response.status_code == 302, response.content
    outcome = microsoft.control.sign_in(response["Location"], user, mfa=mfa)
    return follow_back(client, outcome)
