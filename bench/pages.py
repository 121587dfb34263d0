"""Benchmark 4: pages over big tables. The admin change lists of records, runs and connections
(as the operator and as a tenant administrator) and a member's connections page: queries per
request and median time, first with a few rows, then with the full sizes (1,000,000 records,
10,000 runs, 10,000 connections). The query count must not grow with the rows.

Rows are written with SQL (`INSERT ... SELECT generate_series`) and bulk_create; the pages are
served by Django's test client in this process, against the same PostgreSQL.
"""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import timedelta

from bench.common import Row

SMALL = {"records": 100, "runs": 20, "connections": 20, "mine": 2}
FULL = {"records": 1_000_000, "runs": 10_000, "connections": 10_000, "mine": 20}
QUICK = {"records": 2_000, "runs": 200, "connections": 200, "mine": 6}
JOBS = 100  # the records and runs are spread over this many jobs
REQUESTS = 7
PAGES = {
    "records": "/admin/graphsync/record/",
    "runs": "/admin/graphsync/syncrun/",
    "connections": "/admin/connections/connection/",
    "my connections": "/connections/",
}


def run(env: dict[str, str], quick: bool, options: dict) -> list[Row]:
    from django.conf import settings

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    world = make_world()
    grow(world, SMALL)
    small = measure(world)
    large_sizes = QUICK if quick else FULL
    print(
        f"  writing {large_sizes['records']:,} records, {large_sizes['runs']:,} runs, "
        f"{large_sizes['connections']:,} connections ...",
        flush=True,
    )
    started = time.perf_counter()
    grow(world, large_sizes)
    print(f"  written in {time.perf_counter() - started:.0f} s", flush=True)
    large = measure(world)
    detail(small, large, large_sizes)
    return rows(small, large, large_sizes)


def make_world() -> dict:
    from django.contrib.auth import get_user_model

    from connections.models import EntraApp, Membership, Tenant

    users = get_user_model().objects
    tenant = Tenant.objects.create(name="Bench pages")
    app = EntraApp.objects.create(
        tenant=tenant,
        name="Bench pages app",
        client_id=str(uuid.uuid4()),
        authority="organizations",
        delegated_scopes="User.Read Mail.Read",
    )
    operator = users.create_user("pages-operator", "op@example.com", "x", is_staff=True)
    operator.is_superuser = True
    operator.save()
    admin = users.create_user("pages-admin", "admin@example.com", "x", is_staff=True)
    Membership.objects.create(user=admin, tenant=tenant, role="admin")
    member = users.create_user("pages-member", "member@example.com", "x")
    Membership.objects.create(user=member, tenant=tenant, role="member")
    return {
        "tenant": tenant,
        "app": app,
        "users": {"operator": operator, "tenant admin": admin, "member": member},
        "sizes": {"records": 0, "runs": 0, "connections": 0, "mine": 0},
    }


def grow(world: dict, sizes: dict) -> None:
    """Add rows until the tables hold `sizes` (the member's connections count among them)."""
    from django.db import connection as db
    from django.utils import timezone

    from connections.models import Connection
    from graphsync.models import Resource, SyncJob

    have, tenant, app = world["sizes"], world["tenant"], world["app"]
    now = timezone.now()
    new = []
    for i in range(have["connections"], sizes["connections"]):
        mine = have["mine"] + len([c for c in new if c.user_id]) < sizes["mine"]
        new.append(
            Connection(
                app=app,
                user=world["users"]["member"] if mine else None,
                ms_tenant_id="11111111-1111-1111-1111-111111111111",
                ms_object_id=f"{i:036d}",
                display_name=f"Person {i}",
                user_principal_name=f"person.{i}@contoso.example",
                access_token_expires_at=now + timedelta(hours=1),
                status=Connection.Status.ACTIVE,
            )
        )
    Connection.objects.bulk_create(new, batch_size=2000)
    have["mine"] += sum(1 for c in new if c.user_id)
    have["connections"] = sizes["connections"]
    jobs = list(SyncJob.objects.filter(tenant=tenant).order_by("pk"))
    if len(jobs) < JOBS:
        firsts = (
            Connection.objects.filter(app=app)
            .exclude(pk__in=[job.connection_id for job in jobs])
            .order_by("pk")[: JOBS - len(jobs)]
        )
        SyncJob.objects.bulk_create(
            SyncJob(connection=c, tenant=tenant, resource=Resource.MAIL, folder="inbox")
            for c in firsts
        )
    jobs_sql = (
        "SELECT id, connection_id, row_number() OVER (ORDER BY id) - 1 AS k "
        "FROM graphsync_syncjob WHERE tenant_id = %(tenant)s"
    )
    params = {"tenant": tenant.pk, "jobs": JOBS}
    with db.cursor() as cursor:
        cursor.execute(
            "INSERT INTO graphsync_record (job_id, connection_id, tenant_id, resource, graph_id,"
            " change_key, title, occurred_at, data, generation, deleted_at, created_at,"
            " updated_at) SELECT j.id, j.connection_id, %(tenant)s, 'mail', 'AAMkAGI2' || g,"
            " 'CQAAABYAAAA' || g, 'Quarterly report ' || g, now() - g * interval '1 minute',"
            " jsonb_build_object('id', 'AAMkAGI2' || g, 'subject', 'Quarterly report ' || g),"
            " 1, NULL, now(), now()"
            f" FROM generate_series(%(first)s, %(last)s) AS g JOIN ({jobs_sql}) AS j"
            " ON j.k = g %% %(jobs)s",
            {**params, "first": have["records"], "last": sizes["records"] - 1},
        )
        cursor.execute(
            "INSERT INTO graphsync_syncrun (job_id, tenant_id, trigger, worker, started_at,"
            " finished_at, outcome, full_resync, pages, requests, created, updated, deleted,"
            " throttled, seconds_waited, error) SELECT j.id, %(tenant)s, 'schedule',"
            " 'bench@host:1', now() - g * interval '15 minutes',"
            " now() - g * interval '15 minutes' + interval '2 seconds', 'succeeded', false,"
            " 1, 1, g %% 7, g %% 3, 0, 0, 0, '' FROM generate_series(%(first)s, %(last)s) AS g"
            f" JOIN ({jobs_sql}) AS j ON j.k = g %% %(jobs)s",
            {**params, "first": have["runs"], "last": sizes["runs"] - 1},
        )
        cursor.execute("ANALYZE")
    have["records"], have["runs"] = sizes["records"], sizes["runs"]


def measure(world: dict) -> dict[tuple[str, str], tuple[int, float]]:
    """(page, who) -> (queries per request, median ms)."""
    from django.db import connection as db
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from portal import twofactor

    figures = {}
    for who, user in world["users"].items():
        client = Client()
        client.force_login(user)
        if twofactor.required(user):  # the operator's second factor, as in production
            code = twofactor.new_recovery_codes(user)[0]
            client.post(reverse("two-factor-verify"), {"code": code})
        for page, url in PAGES.items():
            if (who == "member") != (page == "my connections"):
                continue
            times, queries = [], 0
            for attempt in range(REQUESTS + 1):
                with CaptureQueriesContext(db) as captured:
                    started = time.perf_counter()
                    response = client.get(url)
                    elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise RuntimeError(f"{url} as {who}: HTTP {response.status_code}")
                if attempt:  # the first request warms caches
                    times.append(elapsed * 1000)
                queries = len(captured.captured_queries)
            figures[(page, who)] = (queries, statistics.median(times))
    return figures


def detail(small: dict, large: dict, sizes: dict) -> None:
    print(
        f"\n4. Pages: {SMALL['records']:,} -> {sizes['records']:,} records, {SMALL['runs']:,} -> "
        f"{sizes['runs']:,} runs, {SMALL['connections']:,} -> {sizes['connections']:,} "
        f"connections ({SMALL['mine']} -> {sizes['mine']} the member's); median of "
        f"{REQUESTS} requests\n"
    )
    head = (
        f"{'page':<16} {'as':<13} {'queries small':>13} {'large':>6} {'ms small':>9} {'large':>7}"
    )
    print(head)
    print("-" * len(head))
    for (page, who), (queries, ms) in large.items():
        q0, ms0 = small[(page, who)]
        print(f"{page:<16} {who:<13} {q0:>13} {queries:>6} {ms0:>9.1f} {ms:>7.1f}")


def rows(small: dict, large: dict, sizes: dict) -> list[Row]:
    out = []
    for (page, who), (queries, ms) in large.items():
        q0, ms0 = small[(page, who)]
        out.append(
            Row(
                "4 pages",
                f"{page} as {who}: queries, median ms",
                f"{queries} q, {ms:.0f} ms",
                f"{q0} q, {ms0:.0f} ms with few rows",
                "",
                "queries constant",
                queries <= q0,
            )
        )
    return out
