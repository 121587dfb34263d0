"""The operator dashboard on the admin index: figures per scope, charts, error links, cost."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import timedelta
from html import unescape

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from connections.models import AppCertificate, ClientSecret, Connection, EntraApp
from graphsync.models import Resource, SyncJob, SyncRun
from portal import charts, dashboard
from tests.personas import make_user

pytestmark = pytest.mark.django_db

SVG = "{http://www.w3.org/2000/svg}"
ACME_ERROR = "Graph answered 500 <script>alert('acme')</script> for /me/mailFolders/inbox"
GLOBEX_ERROR = "Missing permission (ErrorAccessDenied): Globex never granted Mail.Read."
ACME_REASON = "AADSTS700082: The refresh token has expired due to inactivity. Trace ID: 1"
GLOBEX_REASON = "Paused: the app's credentials are broken. AADSTS7000215: Globex secret invalid."


def make_job(world, folder="inbox", connection=None, **fields):
    return SyncJob.objects.create(
        connection=connection or world.connection,
        tenant=world.tenant,
        resource=Resource.MAIL,
        folder=folder,
        **fields,
    )


def make_run(job, hours_ago: float = 0, **fields):
    fields.setdefault("started_at", timezone.now() - timedelta(hours=hours_ago))
    return SyncRun.objects.create(job=job, tenant_id=job.tenant_id, trigger="schedule", **fields)


@pytest.fixture
def trouble(acme, globex):
    """Acme: a connection to reconnect, a secret expiring soon, a failing job, a throttled run.
    Globex: broken app credentials, a job disabled for a missing permission."""
    Connection.objects.filter(pk=acme.connection.pk).update(
        status=Connection.Status.RECONNECT_NEEDED, status_reason=ACME_REASON
    )
    Connection.objects.filter(pk=globex.connection.pk).update(
        status=Connection.Status.APP_CREDENTIALS_BROKEN, status_reason=GLOBEX_REASON
    )
    ClientSecret.objects.filter(pk=acme.secret.pk).update(
        expires_on=timezone.localdate() + timedelta(days=10)
    )
    EntraApp.objects.filter(pk=globex.app.pk).update(credentials_status="broken")
    acme_job = make_job(acme, state=SyncJob.State.FAILING, failure_streak=2, last_error=ACME_ERROR)
    globex_job = make_job(
        globex,
        enabled=False,
        state=SyncJob.State.DISABLED,
        disabled_reason=GLOBEX_ERROR,
        last_error=GLOBEX_ERROR,
    )
    runs = {
        "acme_ok": make_run(acme_job, 2, outcome="succeeded", created=40, updated=2, throttled=3),
        "acme_failed": make_run(acme_job, 1, outcome="failed", error=ACME_ERROR),
        "acme_old": make_run(acme_job, 30, outcome="failed", error=ACME_ERROR, created=999),
        "globex_ok": make_run(globex_job, 5, outcome="succeeded", created=7, throttled=11),
        "globex_failed": make_run(globex_job, 4, outcome="failed", error=GLOBEX_ERROR),
    }
    return {"acme_job": acme_job, "globex_job": globex_job, **runs}


def index(client, user):
    client.force_login(user)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    return response


def dashboard_html(response) -> str:
    match = re.search(
        r'<div class="module gp-dash" id="gp-dashboard">.*?</section>\s*</div>\s*</div>',
        response.text,
        re.S,
    )
    assert match, "no dashboard on the page"
    return match.group(0)


def svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", html, re.S)]


def bar_titles(svg: ET.Element) -> list[str]:
    return [
        rect.find(f"{SVG}title").text
        for rect in svg.iter(f"{SVG}rect")
        if rect.get("class") == "gp-chart-bar"
    ]


def counts(board: dashboard.Dashboard, section: str) -> dict[str, int]:
    return {counter.label: counter.count for counter in getattr(board, section)}


# --- scope ----------------------------------------------------------------------------------


def test_operator_sees_the_figures_of_every_tenant(client, operator, acme, globex, trouble):
    html = dashboard_html(index(client, operator))
    assert "all tenants" in html
    for name in ("Acme mail sync", "Globex mail sync"):
        assert name in html
    assert "Missing permission (ErrorAccessDenied): Globex" in html
    assert "AADSTS700082" in html and "AADSTS7000215" in html
    board = dashboard.for_user(operator)
    assert counts(board, "connections")["Reconnect needed"] == 1
    assert counts(board, "connections")["App credentials broken"] == 1
    assert counts(board, "jobs") == {
        "Failing (retrying)": 1,
        "Disabled with a reason": 1,
        "Failed last time": 1,
    }
    assert board.jobs_total == 2
    assert sum(board.synced) == 40 + 2 + 7 and sum(board.throttled) == 3 + 11


def test_tenant_admin_sees_only_their_tenant(client, acme, globex, trouble):
    html = dashboard_html(index(client, acme.admin))
    assert "Acme" in html and "all tenants" not in html
    assert "Acme mail sync" in html and "expires in 10 days" in html
    assert "Globex" not in html
    assert "AADSTS7000215" not in html and "ErrorAccessDenied" not in html
    board = dashboard.for_user(acme.admin)
    assert board.tenant == acme.tenant
    assert counts(board, "connections")["Reconnect needed"] == 1
    assert counts(board, "connections")["App credentials broken"] == 0
    assert [app.name for app in board.apps] == ["Acme mail sync"]
    assert counts(board, "jobs")["Disabled with a reason"] == 0
    assert sum(board.throttled) == 3 and sum(board.synced) == 42
    assert {line.text for line in board.errors} == {ACME_ERROR, ACME_REASON}


def test_members_and_staff_without_a_tenant_get_no_dashboard(client, acme, trouble):
    client.force_login(acme.member)
    assert client.get(reverse("admin:index")).status_code == 302  # to the admin login
    outsider = make_user("outsider", staff=True)
    assert dashboard.for_user(outsider) is None
    response = index(client, outsider)
    assert 'id="gp-dashboard"' not in response.text


def test_admin_index_still_lists_the_apps(client, operator, acme):
    for user in (operator, acme.admin):
        response = index(client, user)
        assert reverse("admin:connections_connection_changelist") in response.text
        assert reverse("admin:graphsync_syncjob_changelist") in response.text
        assert 'id="gp-dashboard"' in response.text
        assert 'id="recent-actions-module"' in response.text


def test_a_quiet_tenant_says_so(client, acme):
    html = dashboard_html(index(client, acme.admin))
    assert "Every active app has working credentials" in html
    assert "No errors" in html


# --- apps with credential problems ----------------------------------------------------------


def test_an_old_secret_replaced_by_a_working_one_is_no_problem(acme):
    ClientSecret.objects.create(
        app=acme.app, value="old", hint="old", expires_on=timezone.localdate() - timedelta(days=3)
    )
    assert dashboard.gather(acme.tenant).apps == []


def test_apps_with_expired_or_missing_credentials_are_listed(acme, globex):
    ClientSecret.objects.filter(pk=acme.secret.pk).update(
        expires_on=timezone.localdate() - timedelta(days=3)
    )
    globex.secret.delete()
    board = dashboard.gather(None)
    problems = {app.name: app.problems for app in board.apps}
    assert problems["Globex mail sync"] == ["no secret or certificate"]
    assert problems["Acme mail sync"][0].startswith("expired on ")
    assert board.apps[0].url == reverse("admin:connections_entraapp_change", args=[globex.app.pk])


def test_a_certificate_valid_for_long_keeps_an_app_off_the_list(acme):
    ClientSecret.objects.filter(pk=acme.secret.pk).update(
        expires_on=timezone.localdate() + timedelta(days=2)
    )
    assert [app.name for app in dashboard.gather(acme.tenant).apps] == ["Acme mail sync"]
    AppCertificate.objects.bulk_create(  # bulk: skips the PEM parsing save() does
        [
            AppCertificate(
                app=acme.app,
                certificate_pem="-",
                private_key="-",
                expires_on=timezone.localdate() + timedelta(days=300),
            )
        ]
    )
    assert dashboard.gather(acme.tenant).apps == []


# --- charts ---------------------------------------------------------------------------------


def test_charts_are_well_formed_svg_with_24_bars(client, operator, trouble):
    html = dashboard_html(index(client, operator))
    assert "<script" not in html.replace("&lt;script", "")
    charts_ = svgs(html)
    assert len(charts_) == 2
    for svg in charts_:
        assert svg.get("role") == "img" and svg.get("aria-label")
        assert svg.find(f"{SVG}title") is not None
        assert len(bar_titles(svg)) == 24
    synced, throttled = charts_
    assert "49 items in total" in synced.get("aria-label")
    assert "14 responses in total" in throttled.get("aria-label")
    assert sum(int(t.split(": ")[1].split()[0].replace(",", "")) for t in bar_titles(synced)) == 49


def test_runs_land_in_the_hour_they_started(acme):
    job = make_job(acme)
    now = timezone.now()  # one clock for the runs and the buckets: no hour may turn in between
    for hours_ago in range(24):
        make_run(
            job, started_at=now - timedelta(hours=hours_ago), created=hours_ago + 1, throttled=1
        )
    make_run(job, started_at=now - timedelta(hours=24, minutes=30), created=1000)  # too old
    board = dashboard.gather(acme.tenant, now=now)
    assert board.synced == [24 - i for i in range(24)]
    assert board.throttled == [1] * 24
    assert board.hours[-1] <= now < board.hours[-1] + timedelta(hours=1)


def test_chart_text_is_escaped_and_stays_xml():
    label = "</title><script>alert('x')</script> & \"more\""
    svg_text = charts.bar_chart([0, 5, 12], ["a", label, "c"], title=label, unit="<u>")
    assert "<script>" not in svg_text
    svg = ET.fromstring(svg_text)
    assert svg.find(f"{SVG}title").text.startswith(label)
    assert bar_titles(svg)[1] == f"{label}: 5 <u>"
    assert svg.get("aria-label").startswith(label)


def test_chart_axis_rounds_up_to_a_readable_number():
    assert [charts.nice_ceiling(v) for v in (0, 1, 3, 7, 11, 180, 2001)] == [
        1,
        1,
        5,
        10,
        20,
        200,
        5000,
    ]


# --- errors and their links -----------------------------------------------------------------


def test_error_text_is_escaped_on_the_page(client, operator, trouble):
    page = index(client, operator).text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;acme&#x27;)&lt;/script&gt;" in page


def test_most_frequent_errors_come_first_and_merge_their_sources(operator, trouble):
    make_run(trouble["acme_job"], 3, outcome="failed", error=ACME_ERROR)
    board = dashboard.for_user(operator)
    first = board.errors[0]
    assert first.text == ACME_ERROR
    assert [s.label for s in first.sources] == ["1 sync job", "2 failed runs in 24 h"]
    assert len(board.errors) == 4


def test_long_errors_group_by_their_beginning(acme):
    stem = "AADSTS50173: The provided grant has expired due to it being revoked. " * 2
    for trace in ("aaaa", "bbbb", "cccc"):
        connection = Connection.objects.create(
            app=acme.app,
            ms_tenant_id="11111111-1111-1111-1111-111111111111",
            ms_object_id=trace,
            status=Connection.Status.RECONNECT_NEEDED,
            status_reason=f"{stem} Trace ID: {trace}",
        )
    [line] = dashboard.gather(acme.tenant).errors
    assert line.truncated and len(line.text) == dashboard.ERROR_PREFIX
    assert line.sources[0].count == 3
    assert connection.status_reason.startswith(line.text)


def linked_rows(client, url: str, model: str) -> set[int]:
    response = client.get(url)
    assert response.status_code == 200, url
    pattern = re.escape(reverse(f"admin:{model}_changelist")) + r"(\d+)/change/"
    return {int(pk) for pk in re.findall(pattern, response.text)}


def test_error_links_list_the_rows_behind_them(client, operator, acme, globex, trouble):
    make_job(acme, folder="sentitems", state=SyncJob.State.FAILING, last_error="Something else")
    client.force_login(operator)
    links = {
        (line.text, source.noun): source.url
        for line in dashboard.for_user(operator).errors
        for source in line.sources
    }

    def rows(text, noun, model):
        return linked_rows(client, links[(text, noun)], model)

    assert rows(ACME_ERROR, "sync job", "graphsync_syncjob") == {trouble["acme_job"].pk}
    assert rows(GLOBEX_ERROR, "sync job", "graphsync_syncjob") == {trouble["globex_job"].pk}
    # The failed run of the last 24 hours: not the one of 30 hours ago, nor the good one.
    assert rows(ACME_ERROR, "failed run", "graphsync_syncrun") == {trouble["acme_failed"].pk}
    assert rows(GLOBEX_REASON, "connection", "connections_connection") == {globex.connection.pk}


def test_error_links_work_for_a_tenant_admin(client, acme, trouble):
    client.force_login(acme.admin)
    [reason] = [line for line in dashboard.for_user(acme.admin).errors if line.text == ACME_REASON]
    assert linked_rows(client, reason.sources[0].url, "connections_connection") == {
        acme.connection.pk
    }


def test_counter_links_filter_the_changelists(client, operator, acme, globex, trouble):
    client.force_login(operator)
    board = dashboard.for_user(operator)
    by_label = {counter.label: counter.url for counter in board.connections + board.jobs}
    assert linked_rows(client, by_label["Reconnect needed"], "connections_connection") == {
        acme.connection.pk
    }
    assert linked_rows(client, by_label["Active"], "connections_connection") == set()
    assert linked_rows(client, by_label["Failing (retrying)"], "graphsync_syncjob") == {
        trouble["acme_job"].pk
    }
    make_job(globex, folder="drafts", enabled=False, state=SyncJob.State.DISABLED)
    assert linked_rows(client, by_label["Disabled with a reason"], "graphsync_syncjob") == {
        trouble["globex_job"].pk
    }
    assert linked_rows(client, by_label["Failed last time"], "graphsync_syncjob") == {
        trouble["acme_job"].pk
    }
    page = unescape(dashboard_html(index(client, operator)))
    assert all(url in page for url in by_label.values())


# --- cost -----------------------------------------------------------------------------------


def grow(world, job, count: int, start: int) -> None:
    """`count` more connections, each with a failing job, and `count` runs in the window."""
    statuses = list(Connection.Status)
    connections = Connection.objects.bulk_create(
        [
            Connection(
                app=world.app,
                ms_tenant_id="22222222-2222-2222-2222-222222222222",
                ms_object_id=f"oid-{i}",
                status=statuses[i % len(statuses)],
                status_reason=f"reason {i % 7}",
            )
            for i in range(start, start + count)
        ]
    )
    SyncJob.objects.bulk_create(
        [
            SyncJob(
                connection=connection,
                tenant=world.tenant,
                resource=Resource.MAIL,
                folder="inbox",
                state=SyncJob.State.FAILING,
                failure_streak=1,
                last_error=f"error {i % 9}",
            )
            for i, connection in enumerate(connections)
        ]
    )
    SyncRun.objects.bulk_create(
        [
            SyncRun(
                job=job,
                tenant=world.tenant,
                trigger="schedule",
                started_at=timezone.now() - timedelta(minutes=5 * i),
                outcome="failed" if i % 2 else "succeeded",
                error=f"run error {i % 11}" if i % 2 else "",
                created=i,
                throttled=i % 3,
            )
            for i in range(start, start + count)
        ]
    )
    EntraApp.objects.bulk_create(
        [
            EntraApp(
                tenant=world.tenant,
                name=f"App {i}",
                client_id=f"00000000-0000-4000-8000-{i:012d}",
                credentials_status="broken",
            )
            for i in range(start, start + count)
        ]
    )


@pytest.mark.parametrize("persona", ["operator", "admin"])
def test_dashboard_queries_do_not_grow_with_rows(client, operator, acme, globex, persona):
    user = operator if persona == "operator" else acme.admin
    job = make_job(acme)
    grow(acme, job, 2, 0)
    grow(globex, make_job(globex), 2, 0)
    client.force_login(user)
    url = reverse("admin:index")
    with CaptureQueriesContext(db_connection) as few_gather:
        dashboard.gather(None if persona == "operator" else acme.tenant)
    with CaptureQueriesContext(db_connection) as few_page:
        assert client.get(url).status_code == 200
    grow(acme, job, 200, 2)
    with CaptureQueriesContext(db_connection) as many_gather:
        board = dashboard.gather(None if persona == "operator" else acme.tenant)
    with CaptureQueriesContext(db_connection) as many_page:
        page = client.get(url)
    assert page.status_code == 200
    assert len(few_gather) == len(many_gather) == 7
    assert len(few_page) == len(many_page)
    assert board.more_apps and len(board.apps) == dashboard.APP_LIMIT
    assert len(board.errors) == dashboard.TOP_ERRORS
    assert sum(board.synced) >= sum(range(202))  # every run of the last 24 h is in a bucket
