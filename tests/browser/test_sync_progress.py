"""A member watches a sync run: the figures move without a reload, and settle when it ends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from graphsync.models import Record, SyncJob, SyncRun
from tests.browser.test_connect_journey import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_progress_updates_while_a_run_is_under_way(page, live_server, acme):
    job = SyncJob.objects.create(
        connection=acme.connection,
        tenant=acme.tenant,
        resource="mail",
        folder="inbox",
        state=SyncJob.State.RUNNING,
        lease_owner="worker-1",
        lease_expires_at=timezone.now() + timedelta(minutes=5),
    )
    run = SyncRun.objects.create(job=job, tenant=acme.tenant, trigger="first", pages=1)
    sign_in(page, live_server.url, acme.member)
    row = page.locator(f'tr[data-job="{job.pk}"]')
    row.wait_for()
    assert "page 1: 0 new" in row.inner_text()

    # The worker commits pages: the row follows within a poll or two.
    Record.objects.create(
        job=job,
        connection=acme.connection,
        tenant=acme.tenant,
        resource="mail",
        graph_id="AAMkAD1",
        title="Hello",
    )
    SyncJob.objects.filter(pk=job.pk).update(live_count=1)  # as the worker's page commit does
    SyncRun.objects.filter(pk=run.pk).update(pages=4, created=200)
    page.wait_for_selector(f'tr[data-job="{job.pk}"] >> text=page 4: 200 new', timeout=10_000)
    assert row.locator('[data-field="live"]').inner_text() == "1"

    # The run ends: the page reloads once, with the outcome and no progress line.
    SyncRun.objects.filter(pk=run.pk).update(
        outcome=SyncRun.Outcome.SUCCEEDED, finished_at=timezone.now()
    )
    SyncJob.objects.filter(pk=job.pk).update(
        state=SyncJob.State.IDLE, lease_owner="", lease_expires_at=None
    )
    page.wait_for_selector(f'tr[data-job="{job.pk}"][data-busy="0"]', timeout=10_000)
    assert "succeeded" in row.inner_text() and "so far" not in row.inner_text()
