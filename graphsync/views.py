"""The member's view of their syncs: live status as JSON, and their own records, read-only.
Thin: the figures come from graphsync.status. Another member's connection or record is a 404."""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render

from connections.models import Connection
from connections.tenancy import member_tenant
from graphsync import status
from graphsync.models import Record, Resource, SyncJob

RECORDS_PER_PAGE = 50


def _my_connection(request, pk: int) -> Connection:
    return get_object_or_404(
        Connection,
        pk=pk,
        user=request.user,
        kind=Connection.Kind.DELEGATED,  # an organisation's app-only one is the admin's
        app__tenant=member_tenant(request.user),
    )


@login_required
def connection_status(request, pk: int):
    connection = _my_connection(request, pk)
    jobs = status.of_connections([connection.pk]).get(connection.pk, [])
    return JsonResponse(
        {
            "connection": connection.pk,
            "busy": any(job.busy for job in jobs),
            "jobs": [job.as_json() for job in jobs],
        }
    )


@login_required
def records(request, pk: int):
    connection = _my_connection(request, pk)
    resources = [
        (value, Resource(value).label)
        for value in SyncJob.objects.filter(connection=connection)
        .order_by("resource")
        .values_list("resource", flat=True)
        .distinct()
    ]
    resource = request.GET.get("resource", "")
    # Newest stored first, on the primary key: no sort of a whole mailbox per page.
    rows = Record.objects.filter(connection=connection).defer("data").order_by("-id")
    if resource in dict(resources):
        rows = rows.filter(resource=resource)
    else:
        resource = ""
    page = Paginator(rows, RECORDS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "graphsync/records.html",
        {"connection": connection, "resources": resources, "resource": resource, "page": page},
    )


@login_required
def record_detail(request, pk: int):
    record = get_object_or_404(
        Record.objects.select_related("connection", "job"),
        pk=pk,
        connection__user=request.user,
        connection__kind=Connection.Kind.DELEGATED,
        tenant=member_tenant(request.user),
    )
    pretty = json.dumps(record.data, indent=2, ensure_ascii=False, sort_keys=True)
    return render(request, "graphsync/record.html", {"record": record, "pretty": pretty})
