"""Organisation-wide sync in the admin: the settings form, reconcile and resume, the progress of a
load, the members list, what the pages cost, tenant isolation, and the dashboard's counts."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from connections.models import AuditEvent, Connection
from graphsync import orgsync
from graphsync.admin.orgsync import CONNECTION_REFUSED, progress
from graphsync.models import OrgMember, OrgSync, Record, Resource, SyncJob, SyncRun
from graphsync.resources import MEMBERS
from portal import dashboard
from tests.conftest import ALEX, MS_TENANT
from tests.connections.test_admin_secrets_not_loaded import loaded_secrets
from tests.graphsync.test_orgsync import consent, sync_directory

pytestmark = pytest.mark.django_db

ROLES = "User.Read.All Group.Read.All Mail.Read Calendars.Read Contacts.Read Files.Read.All"
REASON = "The user's mailbox is not enabled for the REST API (MailboxNotEnabledForRESTAPI)."


def gid(prefix: str, n: int) -> str:
    """A Graph object id (36 characters)."""
    return f"{prefix}{n:07d}-0000-4000-8000-000000000000"


def app_only(world, tid: str) -> Connection:
    return Connection.objects.create(
        app=world.app,
        kind=Connection.Kind.APPLICATION,
        ms_tenant_id=tid,
        granted_scopes=ROLES,
        access_token="app-only-token",
        access_token_expires_at=timezone.now() + timedelta(hours=1),
    )


def directory_job(connection, resource) -> SyncJob:
    return SyncJob.objects.create(
        connection=connection, tenant_id=connection.app.tenant_id, resource=resource
    )


def store(job, items: list[dict], title_key="displayName") -> None:
    Record.objects.bulk_create(
        Record(
            job=job,
            connection_id=job.connection_id,
            tenant_id=job.tenant_id,
            resource=job.resource,
            graph_id=item["id"],
            title=item.get(title_key) or "",
            data=item,
        )
        for item in items
    )


def person(graph_id: str, upn: str, mail=True) -> dict:
    name = upn.split("@")[0].title()
    return {
        "id": graph_id,
        "userPrincipalName": upn,
        "displayName": name,
        "mail": upn if mail else None,
        "accountEnabled": True,
    }


def make_org_world(world, prefix: str, domain: str):
    """An app-only connection with a synced directory: three users (the third without a
    mailbox) and two groups."""
    connection = app_only(world, tid=gid(prefix, 0))
    users = [
        person(gid(prefix, 1), f"adele@{domain}"),
        person(gid(prefix, 2), f"alex@{domain}"),
        person(gid(prefix, 3), f"diego@{domain}", mail=False),
    ]
    store(directory_job(connection, Resource.USERS), users)
    name = world.tenant.name
    groups = [
        {"id": gid(prefix, 11), "displayName": f"{name} Sales", MEMBERS: [users[0]["id"]]},
        {"id": gid(prefix, 12), "displayName": f"{name} Engineers", MEMBERS: [users[1]["id"]]},
    ]
    store(directory_job(connection, Resource.GROUPS), groups)
    world.app_only = connection
    world.users = [user["id"] for user in users]
    world.groups = [group["id"] for group in groups]
    world.domain = domain
    return world


@pytest.fixture
def acme_org(acme):
    return make_org_world(acme, "a", "acme.example")


@pytest.fixture
def globex_org(globex):
    return make_org_world(globex, "b", "globex.example")


def turn_on(world, **settings) -> OrgSync:
    org = OrgSync.objects.create(
        connection=world.app_only, tenant=world.tenant, enabled=True, **settings
    )
    orgsync.reconcile(org.pk)
    org.refresh_from_db()
    return org


def url(name: str, *args) -> str:
    return reverse(f"admin:graphsync_{name}", args=args)


def form_data(world, **fields) -> dict:
    data = {
        "connection": world.app_only.pk,
        "enabled": "on",
        "scope": OrgSync.Scope.EVERYONE,
        "users": "",
        "mailbox_only": "on",
        "retention": OrgSync.Retention.KEEP,
    }
    return {**data, **fields}


@pytest.fixture
def sent(monkeypatch) -> list:
    """Tasks handed to the broker (core.queue.send), instead of a broker."""
    tasks: list = []
    monkeypatch.setattr(
        "core.queue.send", lambda task, *args, countdown=None: tasks.append((task, args))
    )
    return tasks


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def errors_of(response) -> dict[str, list[str]]:
    return response.context["adminform"].form.errors


def linked(response, model: str) -> set[int]:
    pattern = re.escape(reverse(f"admin:graphsync_{model}_changelist")) + r"(\d+)/change/"
    return {int(pk) for pk in re.findall(pattern, response.text)}


# --- the settings form ----------------------------------------------------------------------


def test_the_add_page_offers_own_app_only_connections_and_their_directory_groups(
    client, acme_org, globex_org
):
    client.force_login(acme_org.admin)
    page = client.get(url("orgsync_add")).text
    assert f'<option value="{acme_org.app_only.pk}"' in page
    assert f'<option value="{acme_org.connection.pk}"' not in page  # delegated
    assert f'<option value="{globex_org.app_only.pk}"' not in page
    assert "Acme Sales" in page and "Acme Engineers" in page
    assert "Globex" not in page


def test_a_tenant_admin_turns_it_on_for_chosen_groups_and_reconcile_follows_the_commit(
    client, acme_org, sent, django_capture_on_commit_callbacks
):
    client.force_login(acme_org.admin)
    sales = acme_org.groups[0]
    data = form_data(acme_org, scope=OrgSync.Scope.GROUPS, groups=[sales])
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(url("orgsync_add"), data)
    assert response.status_code == 302, errors_of(response)
    org = OrgSync.objects.get()
    assert (org.tenant, org.connection, org.enabled) == (acme_org.tenant, acme_org.app_only, True)
    assert org.groups == [sales]
    assert sent == []  # not before the commit
    for callback in callbacks:
        callback()
    assert sent == [("graphsync.tasks.reconcile_org", (org.pk,))]
    orgsync.reconcile(org.pk)
    assert set(OrgMember.objects.values_list("graph_id", flat=True)) == {acme_org.users[0]}
    [event] = AuditEvent.objects.filter(kind=AuditEvent.Kind.ORG_SYNC_CHANGED)
    assert (event.tenant, event.connection, event.actor) == (
        acme_org.tenant,
        acme_org.app_only,
        acme_org.admin,
    )


def test_unknown_groups_are_named_and_nothing_is_saved(client, acme_org, globex_org):
    client.force_login(acme_org.admin)
    made_up = gid("f", 99)
    theirs = globex_org.groups[0]
    data = form_data(
        acme_org, scope=OrgSync.Scope.GROUPS, groups=[acme_org.groups[0], made_up, theirs]
    )
    response = client.post(url("orgsync_add"), data)
    assert response.status_code == 200
    [error] = errors_of(response)["groups"]
    assert made_up in error and theirs in error and acme_org.groups[0] not in error
    assert not OrgSync.objects.exists()
    # Nothing typed is lost: the refused ids are still chosen on the page.
    assert re.search(rf'<option value="{made_up}" selected>Unknown group', response.text)
    assert "Globex Sales" not in response.text


def test_listed_users_are_checked_against_the_directory(client, acme_org, globex_org):
    client.force_login(acme_org.admin)
    typed = f"adele@acme.example\nnobody@acme.example, {acme_org.users[1]}; alex@globex.example"
    response = client.post(url("orgsync_add"), form_data(acme_org, scope="listed", users=typed))
    assert response.status_code == 200
    [error] = errors_of(response)["users"]
    assert "nobody@acme.example, alex@globex.example" in error
    assert "adele@acme.example" not in error
    assert typed in unescape(response.text)  # the textarea keeps what was typed
    assert not OrgSync.objects.exists()

    typed = f"ADELE@acme.example\n{acme_org.users[1]}\nadele@acme.example"
    response = client.post(url("orgsync_add"), form_data(acme_org, scope="listed", users=typed))
    assert response.status_code == 302, errors_of(response)
    org = OrgSync.objects.get()
    assert org.users == ["ADELE@acme.example", acme_org.users[1]]
    orgsync.reconcile(org.pk)
    assert OrgMember.objects.filter(org=org).count() == 2


@pytest.mark.parametrize("scope, field", [("groups", "groups"), ("listed", "users")])
def test_a_scope_without_its_entries_is_refused(client, acme_org, scope, field):
    client.force_login(acme_org.admin)
    response = client.post(url("orgsync_add"), form_data(acme_org, scope=scope))
    assert response.status_code == 200
    assert "at least one" in errors_of(response)[field][0]
    assert not OrgSync.objects.exists()


@pytest.mark.parametrize("whose", ["another tenant's", "a delegated"])
def test_only_an_app_only_connection_of_ones_own_tenant_may_be_chosen(
    client, acme_org, globex_org, whose
):
    client.force_login(acme_org.admin)
    chosen = globex_org.app_only if whose == "another tenant's" else acme_org.connection
    response = client.post(url("orgsync_add"), form_data(acme_org, connection=chosen.pk))
    assert response.status_code == 200
    assert errors_of(response)["connection"] == [CONNECTION_REFUSED]
    assert not OrgSync.objects.exists()


def test_changing_the_settings_keeps_the_connection_and_reconciles_after_commit(
    client, acme_org, globex_org, sent, django_capture_on_commit_callbacks
):
    org = turn_on(acme_org)
    client.force_login(acme_org.admin)
    data = form_data(acme_org, connection=globex_org.app_only.pk, retention="delete")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url("orgsync_change", org.pk), data)
    assert response.status_code == 302, errors_of(response)
    org.refresh_from_db()
    assert org.retention == OrgSync.Retention.DELETE
    assert org.connection == acme_org.app_only  # read-only once saved
    assert sent == [("graphsync.tasks.reconcile_org", (org.pk,))]


def test_an_organisation_wide_sync_is_turned_off_not_deleted(client, acme_org, operator):
    org = turn_on(acme_org)
    for user in (acme_org.admin, operator):
        client.force_login(user)
        client.post(url("orgsync_delete", org.pk), {"post": "yes"})
        assert OrgSync.objects.filter(pk=org.pk).exists()


# --- reconcile now and resume ------------------------------------------------------------------


def test_reconcile_now_brings_members_in_line_and_says_what_changed(client, acme_org):
    org = OrgSync.objects.create(connection=acme_org.app_only, tenant=acme_org.tenant, enabled=True)
    client.force_login(acme_org.admin)
    response = client.post(
        url("orgsync_changelist"),
        {"action": "reconcile_now", "_selected_action": [org.pk]},
        follow=True,
    )
    assert any("2 in scope, 2 joined, 0 left, 10 jobs created" in m for m in messages_of(response))
    assert OrgMember.objects.filter(org=org).count() == 2  # Diego has no mailbox

    OrgSync.objects.filter(pk=org.pk).update(
        scope=OrgSync.Scope.GROUPS, groups=[acme_org.groups[0]]
    )
    response = client.post(url("orgsync_reconcile", org.pk), follow=True)
    assert response.redirect_chain[-1][0] == url("orgsync_change", org.pk)
    assert any("1 in scope, 0 joined, 1 left" in m for m in messages_of(response))


def test_resume_brings_back_a_paused_organisations_jobs(client, acme_org):
    org = turn_on(acme_org)
    assert orgsync.pause(acme_org.app_only.pk, "Mail.Read was taken away.")
    users_jobs = SyncJob.objects.filter(connection=acme_org.app_only).exclude(mailbox="")
    assert not users_jobs.filter(enabled=True).exists()
    client.force_login(acme_org.admin)
    page = client.get(url("orgsync_change", org.pk)).text
    assert "Mail.Read was taken away." in page and url("orgsync_resume", org.pk) in page

    response = client.post(url("orgsync_resume", org.pk), follow=True)
    assert any("resumed" in m for m in messages_of(response))
    org.refresh_from_db()
    assert org.paused_at is None
    assert users_jobs.filter(enabled=True).count() == 10

    response = client.post(
        url("orgsync_changelist"), {"action": "resume", "_selected_action": [org.pk]}, follow=True
    )
    assert messages_of(response) == ["None of them was paused: nothing to resume."]


# --- progress -----------------------------------------------------------------------------------


def make_member(org, graph_id: str, state=OrgMember.State.IN_SCOPE) -> OrgMember:
    return OrgMember.objects.create(
        org=org,
        tenant_id=org.tenant_id,
        graph_id=graph_id,
        user_principal_name=f"{graph_id[:8]}@acme.example",
        state=state,
    )


def make_jobs(org, graph_id: str, *jobs: dict) -> list[SyncJob]:
    return SyncJob.objects.bulk_create(
        SyncJob(
            connection_id=org.connection_id,
            tenant_id=org.tenant_id,
            mailbox=graph_id,
            resource=Resource.MAIL,
            folder=f"folder{i}",
            **fields,
        )
        for i, fields in enumerate(jobs)
    )


@pytest.fixture
def loading(acme_org):
    """An organisation an hour into its first load: two users done (one with some jobs
    stopped), one in progress, two waiting (one without jobs yet), one disabled, one left."""
    org = OrgSync.objects.create(connection=acme_org.app_only, tenant=acme_org.tenant, enabled=True)
    now = timezone.now()
    ok = {"last_success_at": now, "live_count": 10}
    stopped = {"enabled": False, "state": SyncJob.State.DISABLED, "disabled_reason": REASON}
    users = {
        name: gid("c", i)
        for i, name in enumerate(
            ["done", "running", "waiting", "disabled", "partly", "no_jobs", "left"]
        )
    }
    for name, graph_id in users.items():
        make_member(org, graph_id, OrgMember.State.LEFT if name == "left" else "in_scope")
    make_jobs(org, users["done"], ok, {**ok, "live_count": 5})
    running = make_jobs(
        org, users["running"], {"state": SyncJob.State.RUNNING, "live_count": 3}, ok
    )
    make_jobs(org, users["waiting"], {}, {})
    make_jobs(org, users["disabled"], stopped, stopped)
    make_jobs(org, users["partly"], ok, stopped)
    make_jobs(
        org,
        users["left"],
        {"enabled": False, "disabled_reason": orgsync.LEFT_SCOPE, "live_count": 7},
    )
    SyncJob.objects.filter(connection=acme_org.app_only).update(created_at=now - timedelta(hours=1))
    job = running[0]
    for minutes_ago, throttled in ((10, 3), (50, 1), (120, 9)):
        started_at = now - timedelta(minutes=minutes_ago)
        SyncRun.objects.create(
            job=job,
            tenant_id=job.tenant_id,
            trigger="first",
            started_at=started_at,
            throttled=throttled,
        )
    users_job = SyncJob.objects.get(connection=acme_org.app_only, resource=Resource.USERS)
    SyncRun.objects.create(job=users_job, tenant_id=job.tenant_id, trigger="schedule", throttled=50)
    return org, users, now


def test_progress_counts_each_users_mailbox_once(loading):
    org, _, now = loading
    figures = progress(org, now=now)
    assert (figures.in_scope, figures.left) == (6, 1)
    assert (figures.done, figures.in_progress, figures.waiting, figures.disabled) == (2, 1, 2, 1)
    assert figures.partly_stopped == 1
    assert figures.reasons == [(REASON, 2)]
    assert figures.records == (10 + 5) + (3 + 10) + 10 + 7  # every user job, leavers' kept too
    assert figures.throttled == 3 + 1  # the users' runs of the last hour, not the directory's
    # Two users done in the hour since the load began, three to go: an hour and a half.
    assert figures.seconds_left == pytest.approx(1.5 * 3600)
    assert (figures.loading, figures.percent, figures.time_left) == (
        True,
        40,
        "about 1 h 30 min left",
    )


def test_the_organisations_page_shows_its_state_and_progress(client, loading, acme_org):
    org, _, _ = loading
    Connection.objects.filter(pk=acme_org.app_only.pk).update(
        granted_scopes="User.Read.All Mail.Read"
    )
    client.force_login(acme_org.admin)
    page = unescape(client.get(url("orgsync_change", org.pk)).text)
    status = re.search(r'id="gp-orgsync-status".*?</fieldset>', page, re.S).group(0)
    for text in (
        "6 in scope",
        "1 left the scope",
        "2 done",
        "1 in progress",
        "2 waiting",
        "1 disabled",
        "1 more with some of their jobs stopped",
        f"{REASON} (2 users)",
        "Mail folder",
        "Not granted: Calendar, Contacts, OneDrive",
        "4 in the last hour",
        "2 of 5 (40 %), about 1 h 30 min left",
    ):
        assert text in " ".join(status.split()), text
    assert '<progress value="2" max="5"' in status
    assert f"org__id__exact={org.pk}&state__exact=in_scope&mailbox=disabled" in status


def test_no_progress_bar_once_everyone_is_done(acme_org, client):
    org = turn_on(acme_org)
    SyncJob.objects.filter(connection=acme_org.app_only).update(last_success_at=timezone.now())
    figures = progress(org)
    assert (figures.done, figures.loading, figures.seconds_left) == (2, False, None)
    client.force_login(acme_org.admin)
    assert 'id="gp-orgsync-load"' not in client.get(url("orgsync_change", org.pk)).text


# --- members ------------------------------------------------------------------------------------


def test_members_list_their_mailbox_status_and_filter_by_it(client, loading, acme_org):
    org, users, _ = loading
    members = {m.graph_id: m.pk for m in OrgMember.objects.filter(org=org)}
    client.force_login(acme_org.admin)
    base = {"org__id__exact": org.pk}

    def listed(**params) -> set[int]:
        response = client.get(url("orgmember_changelist"), {**base, **params})
        assert response.status_code == 200
        return linked(response, "orgmember")

    assert listed() == set(members.values())
    assert listed(mailbox="done") == {members[users["done"]], members[users["partly"]]}
    assert listed(mailbox="waiting") == {members[users["waiting"]], members[users["no_jobs"]]}
    assert listed(mailbox="disabled") == {members[users["disabled"]], members[users["left"]]}
    assert listed(mailbox="disabled", state__exact="in_scope") == {members[users["disabled"]]}
    assert listed(state__exact="left") == {members[users["left"]]}
    assert listed(q=f"{users['running'][:8]}@acme") == {members[users["running"]]}
    page = unescape(client.get(url("orgmember_changelist"), base).text)
    assert "1 job stopped: The user's mailbox is not enabled" in page


def test_a_members_page_links_to_their_jobs(client, loading, acme_org):
    org, users, _ = loading
    member = OrgMember.objects.get(org=org, graph_id=users["running"])
    client.force_login(acme_org.admin)
    response = client.get(url("orgmember_change", member.pk))
    assert response.status_code == 200
    theirs = SyncJob.objects.filter(connection=acme_org.app_only, mailbox=users["running"])
    assert linked(response, "syncjob") == set(theirs.values_list("pk", flat=True))
    assert client.post(url("orgmember_delete", member.pk), {"post": "yes"}).status_code == 403
    assert OrgMember.objects.filter(pk=member.pk).exists()


# --- what the pages cost --------------------------------------------------------------------------


def grow(org, count: int, start: int) -> None:
    """`count` more users in scope with five jobs each, half of them done, and a run each."""
    graph_ids = [gid("d", i) for i in range(start, start + count)]
    OrgMember.objects.bulk_create(
        OrgMember(
            org=org,
            tenant_id=org.tenant_id,
            graph_id=graph_id,
            user_principal_name=f"user{i}@acme.example",
        )
        for i, graph_id in enumerate(graph_ids, start)
    )
    done = timezone.now()
    jobs = SyncJob.objects.bulk_create(
        SyncJob(
            connection_id=org.connection_id,
            tenant_id=org.tenant_id,
            mailbox=graph_id,
            resource=Resource.MAIL,
            folder=f"folder{n}",
            live_count=n,
            last_success_at=done if i % 2 else None,
            state=SyncJob.State.RUNNING if i % 3 == 0 and n == 0 else SyncJob.State.IDLE,
        )
        for i, graph_id in enumerate(graph_ids)
        for n in range(5)
    )
    SyncRun.objects.bulk_create(
        SyncRun(job=job, tenant_id=org.tenant_id, trigger="first", throttled=1) for job in jobs[::5]
    )


PAGES = {
    "organisation": lambda org: url("orgsync_change", org.pk),
    "organisations": lambda org: url("orgsync_changelist"),
    "members": lambda org: url("orgmember_changelist") + f"?org__id__exact={org.pk}",
    "members waiting": lambda org: url("orgmember_changelist") + "?mailbox=waiting",
    "dashboard": lambda org: reverse("admin:index"),
}


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("persona", ["operator", "admin"])
def test_pages_cost_the_same_queries_with_few_or_many_users(
    client, operator, acme_org, page, persona
):
    org = OrgSync.objects.create(connection=acme_org.app_only, tenant=acme_org.tenant, enabled=True)
    grow(org, 3, 0)
    client.force_login(operator if persona == "operator" else acme_org.admin)
    address = PAGES[page](org)
    assert client.get(address).status_code == 200  # caches warmed (content types, sessions)
    with CaptureQueriesContext(db_connection) as few:
        assert client.get(address).status_code == 200
    grow(org, 2000, 3)
    with CaptureQueriesContext(db_connection) as many:
        response = client.get(address)
    assert response.status_code == 200
    assert len(few) == len(many), "\n".join(q["sql"] for q in many.captured_queries)
    if page == "organisation":
        figures = progress(org)
        assert figures.in_scope == 2003 and figures.done == 1001
        assert figures.records == 2003 * sum(range(5))


@pytest.mark.parametrize("persona", ["operator", "admin"])
def test_the_pages_never_load_tokens(client, operator, acme_org, globex_org, persona):
    org = turn_on(acme_org)
    member = OrgMember.objects.filter(org=org).first()
    client.force_login(operator if persona == "operator" else acme_org.admin)
    for address in (
        url("orgsync_changelist"),
        url("orgsync_add"),
        url("orgsync_change", org.pk),
        url("orgmember_changelist"),
        url("orgmember_change", member.pk),
    ):
        assert loaded_secrets(client, address) == [], address


@pytest.mark.parametrize(
    "model, lookup",
    [
        ("orgmember", {"org__connection__access_token__startswith": "gAAAA"}),
        ("orgmember", {"graph_id__startswith": "a"}),
        ("orgsync", {"connection__refresh_token__startswith": "gAAAA"}),
        ("orgsync", {"paused_reason__contains": "Mail"}),
    ],
)
def test_undeclared_lookups_are_refused(client, acme_org, model, lookup):
    client.force_login(acme_org.admin)
    assert client.get(url(f"{model}_changelist"), lookup).status_code == 400


# --- tenant isolation ---------------------------------------------------------------------------


@pytest.fixture
def both(acme_org, globex_org):
    """Each tenant with its organisation-wide sync on, its users in scope."""
    return {world.tenant.name: turn_on(world) for world in (acme_org, globex_org)}


def test_a_tenant_admin_sees_only_their_own_organisation_and_members(client, acme_org, both):
    client.force_login(acme_org.admin)
    response = client.get(url("orgsync_changelist"))
    assert linked(response, "orgsync") == {both["Acme"].pk}
    assert "Globex" not in response.text
    response = client.get(url("orgmember_changelist"))
    assert linked(response, "orgmember") == set(
        OrgMember.objects.filter(org=both["Acme"]).values_list("pk", flat=True)
    )
    assert "globex.example" not in response.text


def test_another_tenants_organisation_and_members_by_url_are_404(client, acme_org, both):
    theirs = both["Globex"]
    reconciled = theirs.reconciled_at
    member = OrgMember.objects.filter(org=theirs).first()
    client.force_login(acme_org.admin)
    for view in ("change", "history", "delete", "reconcile", "resume"):
        address = url(f"orgsync_{view}", theirs.pk)
        # Deleting is refused to everyone before any lookup (403): nothing learnt either way.
        assert client.get(address).status_code in (403, 404), view
        assert client.post(address, {"post": "yes", "enabled": ""}).status_code in (403, 404)
    for view in ("change", "history", "delete"):
        assert client.get(url(f"orgmember_{view}", member.pk)).status_code in (403, 404), view
    theirs.refresh_from_db()
    assert theirs.enabled and theirs.reconciled_at == reconciled


def test_filters_search_and_actions_never_reach_another_tenant(client, acme_org, globex_org, both):
    theirs = both["Globex"]
    reconciled = theirs.reconciled_at
    client.force_login(acme_org.admin)
    members = url("orgmember_changelist")
    for params in (
        {"org__id__exact": theirs.pk},
        {"org__id__exact": theirs.pk, "mailbox": "waiting"},
        {"q": "alex@globex.example"},
        {"q": globex_org.users[0]},
    ):
        response = client.get(members, params)
        assert response.status_code == 200
        assert linked(response, "orgmember") == set()
        assert "Globex" not in response.text
    tenant_filter = client.get(members, {"tenant__id__exact": globex_org.tenant.pk})
    assert linked(tenant_filter, "orgmember") == set()
    client.post(
        url("orgsync_changelist"),
        {"action": "reconcile_now", "_selected_action": [theirs.pk]},
    )
    theirs.refresh_from_db()
    assert theirs.reconciled_at == reconciled


def test_autocomplete_offers_only_own_organisations(client, acme_org, both):
    client.force_login(acme_org.admin)
    response = client.get(
        reverse("admin:autocomplete"),
        {"app_label": "graphsync", "model_name": "orgmember", "field_name": "org", "term": ""},
    )
    assert response.status_code == 200
    assert [int(row["id"]) for row in response.json()["results"]] == [both["Acme"].pk]


def test_an_operator_sees_and_filters_every_tenant(client, operator, acme_org, both):
    client.force_login(operator)
    assert linked(client.get(url("orgsync_changelist")), "orgsync") == {
        org.pk for org in both.values()
    }
    only_acme = client.get(url("orgmember_changelist"), {"tenant__id__exact": acme_org.tenant.pk})
    assert "globex.example" not in only_acme.text and "acme.example" in only_acme.text


# --- the dashboard --------------------------------------------------------------------------------


def counts(board) -> dict[str, int]:
    return {counter.label: counter.count for counter in board.orgs}


def test_the_dashboard_counts_organisation_wide_syncs_per_scope(
    client, operator, acme_org, globex_org, both
):
    orgsync.pause(globex_org.app_only.pk, "Mail.Read was taken away.")
    stopped = acme_org.users[1]
    SyncJob.objects.filter(connection=acme_org.app_only, mailbox=stopped).update(
        enabled=False, disabled_reason=REASON
    )
    assert counts(dashboard.for_user(operator)) == {
        "On": 1,
        "Paused": 1,
        "Users in scope": 4,
        "Users with every job stopped": 3,  # Alex at Acme, and both Globex users (paused)
    }
    board = dashboard.for_user(acme_org.admin)
    assert counts(board) == {
        "On": 1,
        "Paused": 0,
        "Users in scope": 2,
        "Users with every job stopped": 1,
    }
    client.force_login(acme_org.admin)
    html = client.get(reverse("admin:index")).text
    assert 'id="gp-orgsync"' in html
    links = {counter.label: counter.url for counter in board.orgs}
    stopped_members = client.get(links["Users with every job stopped"])
    assert linked(stopped_members, "orgmember") == {
        OrgMember.objects.get(org=both["Acme"], graph_id=stopped).pk
    }
    assert linked(client.get(links["On"]), "orgsync") == {both["Acme"].pk}


def test_the_dashboard_leaves_organisation_wide_sync_out_when_there_is_none(client, acme_org):
    assert dashboard.for_user(acme_org.admin).orgs == []
    client.force_login(acme_org.admin)
    assert 'id="gp-orgsync"' not in client.get(reverse("admin:index")).text


# --- against the emulator -----------------------------------------------------------------------


def test_an_administrator_chooses_a_synced_group_and_its_members_are_synced(
    client, microsoft, contoso, sent, django_capture_on_commit_callbacks
):
    connection = consent(client, microsoft, contoso)
    group = microsoft.control.add_group(MS_TENANT, display_name="Field Sales", members=[ALEX])
    sync_directory(connection)
    client.force_login(contoso.admin)
    assert "Field Sales" in client.get(url("orgsync_add")).text
    data = {
        "connection": connection.pk,
        "enabled": "on",
        "scope": OrgSync.Scope.GROUPS,
        "groups": [group["id"]],
        "users": "",
        "mailbox_only": "on",
        "retention": OrgSync.Retention.KEEP,
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url("orgsync_add"), data)
    assert response.status_code == 302, errors_of(response)
    [(task, (org_id,))] = sent
    orgsync.reconcile(org_id)  # what the worker runs
    assert list(OrgMember.objects.values_list("graph_id", flat=True)) == [ALEX]
    page = " ".join(unescape(client.get(url("orgsync_change", org_id)).text).split())
    assert "1 in scope" in page and "0 of 1 (0 %)" in page
    assert "Mail folder, Calendar, Contacts, OneDrive" in page
