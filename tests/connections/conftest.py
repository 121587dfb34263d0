"""Fixtures of the connections tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_webhook_tasks(settings):
    """Raising an event queues no delivery task unless a test asks for one: the session's
    worker takes the webhooks queue, and delivering while a test's tables are being emptied
    can deadlock with the TRUNCATE."""
    settings.WEBHOOK_DELIVER_ON_COMMIT = False
