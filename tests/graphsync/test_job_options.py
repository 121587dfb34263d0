"""A sync job's life beyond one run: the options an administrator may give it, checked in the
admin and again when a run reads them, and what a disconnect and a reconnect do to it."""

from __future__ import annotations

import json
import logging

import pytest
from django.urls import reverse

from graphsync import engine, jobs, resources
from graphsync.models import Resource, SyncJob, SyncRun
from tests.conftest import ADELE
from tests.flows import connected, follow_back

pytestmark = pytest.mark.django_db(transaction=True)


def make_job(world, resource=Resource.MAIL, folder="inbox", **fields) -> SyncJob:
    return SyncJob.objects.create(
        connection=world.connection,
        tenant=world.tenant,
        resource=resource,
        folder=folder,
        **fields,
    )


def post_options(client, job, options: str):
    return client.post(
        reverse("admin:graphsync_syncjob_change", args=[job.pk]),
        {
            "enabled": "on",
            "interval_seconds": job.interval_seconds,
            "options": options,
            "runs-TOTAL_FORMS": 0,
            "runs-INITIAL_FORMS": 0,
            "runs-MIN_NUM_FORMS": 0,
            "runs-MAX_NUM_FORMS": 0,
        },
    )


# --- options in the admin ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "options", "named"),
    [
        (Resource.MAIL, '{"page_size": "abc"}', "page_size: must be a whole number"),
        (Resource.CALENDAR, '{"days_back": 1e30}', "days_back: must be a whole number"),
        (Resource.CALENDAR, '{"days_ahead": 99999}', "days_ahead: must be from 0 to 3650"),
        (Resource.CALENDAR, '{"days_back": 0, "days_ahead": 0}', "window would be empty"),
        (Resource.MAIL, '{"page_size": 0}', "page_size: must be from 1 to 1000"),
        (Resource.MAIL, '{"page_size": 1001}', "page_size: must be from 1 to 1000"),
        (Resource.MAIL, '{"page_size": true}', "page_size: must be a whole number"),
        (Resource.USERS, '{"page_size": 1000}', "page_size: must be from 1 to 999"),
        (Resource.MAIL, '{"days_back": 10}', "days_back: not an option of mail jobs"),
        (Resource.PROFILE, '{"page_size": 10}', "page_size: not an option of profile jobs"),
    ],
)
def test_job_form_refuses_options_a_run_could_not_use_naming_the_key(
    client, acme, resource, options, named
):
    job = make_job(acme, resource, "")
    client.force_login(acme.admin)
    response = post_options(client, job, options)
    assert response.status_code == 200
    assert named in response.text.replace("&#x27;", "'")
    job.refresh_from_db()
    assert job.options == {}


def test_job_form_answers_thousands_of_unknown_keys_with_a_short_list(client, acme):
    job = make_job(acme, Resource.MAIL, "")
    client.force_login(acme.admin)
    options = json.dumps({f"key{n}": n for n in range(5000)})
    response = post_options(client, job, options)
    assert response.status_code == 200
    assert "and 4,990 more." in response.text
    assert response.text.count("not an option of mail jobs") == 10
    job.refresh_from_db()
    assert job.options == {}


@pytest.mark.parametrize(
    ("resource", "options"),
    [
        (Resource.MAIL, {"page_size": 50}),
        (Resource.CALENDAR, {"page_size": 1000, "days_back": 0, "days_ahead": 3650}),
        (Resource.CONTACTS, {"page_size": 25, "default_folder_id": "AAMkADfolder="}),
        (Resource.GROUPS, {"page_size": 999}),
    ],
)
def test_job_form_saves_each_resources_own_options(client, acme, resource, options):
    job = make_job(acme, resource, "")
    client.force_login(acme.admin)
    response = post_options(client, job, json.dumps(options))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.options == options


# --- options when a run reads them -----------------------------------------------------------


def test_bad_stored_options_fall_back_to_defaults_with_a_warning(acme, caplog):
    calendar = make_job(
        acme, Resource.CALENDAR, "", options={"page_size": "abc", "days_back": 1e30}
    )
    spec = resources.spec(Resource.CALENDAR)
    with caplog.at_level(logging.WARNING, logger="graphsync.resources"):
        assert spec.headers(calendar) == {"Prefer": "odata.maxpagesize=200"}
        url = spec.first_url(calendar, "https://graph.example/v1.0")
    assert "startDateTime=" in url
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert f"job {calendar.pk}" in warning and "page_size" in warning and "days_back" in warning
    kept = make_job(acme, Resource.CALENDAR, "x", options={"page_size": 9, "days_ahead": "no"})
    assert resources.options_of(kept) == {"page_size": 9}


@pytest.fixture
def adele(client, microsoft, contoso):
    return connected(client, microsoft, contoso.member, contoso.app)


def test_a_batched_round_with_bad_stored_options_runs_every_job_and_holds_no_lease(
    microsoft, adele
):
    mailbox = list(
        SyncJob.objects.filter(
            connection=adele, resource__in=[Resource.MAIL, Resource.CALENDAR, Resource.CONTACTS]
        ).order_by("pk")
    )
    for job in mailbox:
        assert engine.run(job.pk).run.outcome == SyncRun.Outcome.SUCCEEDED
    # Stored around the admin's checks (an older release, a script): a run must not fail on it.
    SyncJob.objects.filter(pk__in=[job.pk for job in mailbox]).update(
        options={"page_size": "abc", "days_back": 1e30}
    )
    outcomes = engine.run_connection([job.pk for job in mailbox])
    assert [o.run.outcome for o in outcomes] == [SyncRun.Outcome.SUCCEEDED] * len(mailbox)
    leased = SyncJob.objects.filter(connection=adele).exclude(lease_owner="")
    assert not leased.exists()


# --- disconnect and reconnect ----------------------------------------------------------------


def test_reconnecting_brings_back_the_jobs_the_disconnect_stopped_and_only_them(
    client, microsoft, contoso, adele, settings, monkeypatch
):
    drive = SyncJob.objects.get(connection=adele, resource=Resource.DRIVE)
    drive.disable("Disabled by contoso-admin in the admin.")
    client.force_login(contoso.member)
    client.post(reverse("connections:disconnect", args=[adele.pk]))
    assert not SyncJob.objects.filter(connection=adele, enabled=True).exists()
    stopped = set(
        SyncJob.objects.filter(connection=adele, disabled_reason=jobs.DISCONNECTED).values_list(
            "pk", flat=True
        )
    )
    assert len(stopped) == 5  # profile, two mail folders, calendar, contacts

    started = {}
    settings.GRAPHSYNC_START_ON_CONNECT = True
    monkeypatch.setattr(
        "graphsync.scheduling.first_runs",
        lambda ensured, watched: started.update(runs=[j.pk for j in ensured], watched=watched),
    )
    response = client.post(reverse("connections:reconnect", args=[adele.pk]))
    outcome = microsoft.control.sign_in(response["Location"], ADELE)
    assert follow_back(client, outcome).status_code == 302

    enabled = SyncJob.objects.filter(connection=adele, enabled=True)
    assert set(enabled.values_list("pk", flat=True)) == stopped
    drive.refresh_from_db()
    assert not drive.enabled and drive.disabled_reason == "Disabled by contoso-admin in the admin."
    # Their first runs and subscriptions are asked for at once, as on a first connect.
    assert set(started["runs"]) == stopped
    watchable = SyncJob.objects.filter(pk__in=stopped).exclude(resource=Resource.PROFILE)
    assert set(started["watched"]) == set(watchable.values_list("pk", flat=True))
    for job in SyncJob.objects.filter(pk__in=stopped):
        assert job.state == SyncJob.State.IDLE
        run = engine.run(job.pk).run
        assert run is not None and run.outcome == SyncRun.Outcome.SUCCEEDED, (job, run)
