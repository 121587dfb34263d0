"""The API's endpoints. Each looks objects up through the key's tenant only."""

from __future__ import annotations

from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.http import HttpResponse, StreamingHttpResponse
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from connections import audit, connect, connect_sessions
from connections.models import AuditEvent, Connection
from graphsync import feed, proxy, scheduling
from graphsync.models import Resource, SyncJob, SyncRun
from portal.api import pagination
from portal.api.problems import Problem, invalid, not_found
from portal.api.serializers import (
    ConnectionSerializer,
    ConnectSessionInSerializer,
    ConnectSessionOutSerializer,
    SyncJobSerializer,
)

LIMIT = OpenApiParameter("limit", int, description="1 to 1,000 (default 100).")
CURSOR = OpenApiParameter("cursor", str, description="`next_cursor` of the previous page.")


def list_of(serializer, rows, next_cursor) -> dict:
    return {"results": serializer(rows, many=True).data, "next_cursor": next_cursor}


def connections_of(request):
    return Connection.objects.filter(app__tenant=request.auth.tenant).select_related("app")


def connection_of(request, pk) -> Connection:
    connection = (
        connections_of(request).filter(pk=pk).defer("access_token", "refresh_token").first()
    )
    if connection is None:
        raise not_found("connection")
    return connection


def connection_param(request) -> Connection:
    raw = request.query_params.get("connection", "")
    if not raw.isdigit():
        raise invalid("connection", "the id of one of your connections is required.")
    connection = connections_of(request).filter(pk=int(raw)).only("pk", "app").first()
    if connection is None:
        raise Problem(
            404,
            "not-found",
            "Not found",
            "connection: no connection with this id.",
            field="connection",
        )
    return connection


def job_of(request, pk) -> SyncJob:
    job = SyncJob.objects.filter(pk=pk, tenant=request.auth.tenant).first()
    if job is None:
        raise not_found("sync job")
    return job


def last_runs(jobs: list[SyncJob]) -> dict[int, SyncRun]:
    """Each job's latest run, in two queries for the page, not one per job."""
    latest = SyncRun.objects.filter(job=OuterRef("pk")).order_by("-started_at", "-pk")
    ids = SyncJob.objects.filter(pk__in=[j.pk for j in jobs]).annotate(
        last=Subquery(latest.values("pk")[:1])
    )
    run_ids = [row.last for row in ids if row.last]
    return {run.job_id: run for run in SyncRun.objects.filter(pk__in=run_ids)}


def _audit_action(request, message: str, connection: Connection) -> None:
    audit.record(
        AuditEvent.Kind.API_ACTION, message, connection=connection, api_key=request.auth.prefix
    )


# --- connections -------------------------------------------------------------------------------


class ConnectionList(APIView):
    @extend_schema(
        summary="List connections",
        parameters=[
            OpenApiParameter("app", int, description="Only this app registration's."),
            OpenApiParameter("status", str, enum=Connection.Status.values),
            OpenApiParameter("end_user", str, description="Your own end-user id."),
            CURSOR,
            LIMIT,
        ],
        responses=ConnectionSerializer(many=True),
    )
    def get(self, request):
        rows = connections_of(request).defer("access_token", "refresh_token")
        params = request.query_params
        if params.get("app"):
            if not params["app"].isdigit():
                raise invalid("app", "must be an app registration's id.")
            rows = rows.filter(app_id=int(params["app"]))
        if params.get("status"):
            if params["status"] not in Connection.Status.values:
                raise invalid("status", f"one of {', '.join(Connection.Status.values)}.")
            rows = rows.filter(status=params["status"])
        if params.get("end_user"):
            rows = rows.filter(end_user_id=params["end_user"])
        found, next_cursor = pagination.page(rows, params, "connections")
        return Response(list_of(ConnectionSerializer, found, next_cursor))


class ConnectionDetail(APIView):
    @extend_schema(summary="A connection", responses=ConnectionSerializer)
    def get(self, request, pk: int):
        return Response(ConnectionSerializer(connection_of(request, pk)).data)


class ConnectionDisconnect(APIView):
    @extend_schema(
        summary="Disconnect: delete its tokens, stop its syncs (records are kept)",
        request=None,
        responses=ConnectionSerializer,
    )
    def post(self, request, pk: int):
        connection = connection_of(request, pk)
        if connection.status != Connection.Status.REVOKED:
            connect.disconnect(connection, request.auth)
            connection.refresh_from_db()
        return Response(ConnectionSerializer(connection).data)


# --- sync jobs ---------------------------------------------------------------------------------


class ConnectionJobs(APIView):
    @extend_schema(
        summary="A connection's sync jobs", parameters=[CURSOR, LIMIT], responses=SyncJobSerializer
    )
    def get(self, request, pk: int):
        connection = connection_of(request, pk)
        rows = SyncJob.objects.filter(connection=connection, tenant=request.auth.tenant)
        found, next_cursor = pagination.page(rows, request.query_params, "jobs")
        context = {"last_runs": last_runs(found)}
        results = SyncJobSerializer(found, many=True, context=context).data
        return Response({"results": results, "next_cursor": next_cursor})


class JobAction(APIView):
    action = ""

    def post(self, request, pk: int):
        job = job_of(request, pk)
        if not job.enabled:
            raise Problem(
                409,
                "job-disabled",
                "Sync job disabled",
                f"This job is disabled ({job.disabled_reason or 'by an administrator'}).",
            )
        with transaction.atomic():
            if self.action == "resync":
                scheduling.full_resync(job)
            else:
                scheduling.run_now(job)
            _audit_action(
                request, f"{self.action} of job {job.pk} through the API.", job.connection
            )
        job.refresh_from_db()
        return Response(SyncJobSerializer(job).data, status=202)


class JobRun(JobAction):
    action = "run"

    @extend_schema(summary="Run the job now", request=None, responses={202: SyncJobSerializer})
    def post(self, request, pk: int):
        return super().post(request, pk)


class JobResync(JobAction):
    action = "resync"

    @extend_schema(
        summary="Full resync: forget the delta cursor and read everything again",
        request=None,
        responses={202: SyncJobSerializer},
    )
    def post(self, request, pk: int):
        return super().post(request, pk)


# --- connect sessions --------------------------------------------------------------------------


class ConnectSessions(APIView):
    @extend_schema(
        summary="Start a connection for one of your end users",
        request=ConnectSessionInSerializer,
        responses={201: ConnectSessionOutSerializer},
    )
    def post(self, request):
        given = ConnectSessionInSerializer(
            data=request.data, context={"tenant": request.auth.tenant}
        )
        given.is_valid(raise_exception=True)
        fields = dict(given.validated_data)
        session, url = connect_sessions.create(request.auth, fields.pop("app"), **fields)
        session.url = url
        return Response(ConnectSessionOutSerializer(session).data, status=201)


# --- records -----------------------------------------------------------------------------------


class Records(APIView):
    @extend_schema(
        summary="The records changes feed of one connection and resource",
        description="Follow `next_cursor` forever: every record's latest state and every "
        "deletion (`deleted: true`) arrives at least once, in order of change, also while "
        "syncs write. With no new changes, `next_cursor` stays where it is: poll with it.",
        parameters=[
            OpenApiParameter("connection", int, required=True),
            OpenApiParameter("resource", str, required=True, enum=Resource.values),
            CURSOR,
            LIMIT,
            OpenApiParameter(
                "modified_after", OpenApiTypes.DATETIME, description="Only later changes."
            ),
        ],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="records page")},
    )
    def get(self, request):
        params = request.query_params
        connection = connection_param(request)
        resource = params.get("resource", "")
        if resource not in Resource.values:
            raise invalid("resource", f"one of {', '.join(Resource.values)}, not {resource!r}.")
        limit = pagination.limit_of(params)
        modified_after = None
        if params.get("modified_after"):
            modified_after = parse_datetime(params["modified_after"])
            if modified_after is None:
                raise invalid("modified_after", "an ISO 8601 date and time.")
        try:
            found = feed.page(
                connection, resource, params.get("cursor") or None, limit, modified_after
            )
        except feed.BadCursor as exc:
            raise invalid("cursor", str(exc).removeprefix("cursor: ")) from None
        return HttpResponse(feed.render(found), content_type="application/json")


# --- the Graph proxy ---------------------------------------------------------------------------


class Proxy(APIView):
    """Microsoft Graph through a connection: its token, the workers' throttle budgets."""

    @extend_schema(
        summary="Call Microsoft Graph through a connection",
        description="The path is relative to the connection's Graph version root, e.g. "
        "`me/messages`. GET with any key; POST, PATCH, PUT and DELETE with a write key.",
        request=OpenApiTypes.BINARY,
        responses={(200, "*/*"): OpenApiTypes.BINARY},
        methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
    )
    def dispatch_proxy(self, request, pk: int, path: str):
        connection = connection_of(request, pk)
        body = None
        if request.method not in ("GET", "HEAD", "DELETE"):
            body = _read_body(request)
        try:
            answer = proxy.forward(
                connection,
                request.method,
                path,
                request.META.get("QUERY_STRING", ""),
                body,
                request.content_type or None,
                api_key_prefix=request.auth.prefix,
                accept=request.META.get("HTTP_ACCEPT"),
                write_allowed=request.auth.can_write,
                headers=request.headers,
            )
        except proxy.ProxyProblem as exc:
            raise Problem(
                exc.status,
                exc.type,
                exc.title,
                exc.detail,
                field=exc.field,
                retry_after=exc.retry_after,
            ) from None
        response = StreamingHttpResponse(answer.chunks, status=answer.status)
        for name, value in answer.headers.items():
            response[name] = value
        return response

    get = post = patch = put = delete = dispatch_proxy


def _read_body(request) -> bytes:
    """The request body, refused past the proxy's limit before more is read."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    too_large = Problem(
        413,
        "body-too-large",
        "Request body too large",
        f"body: at most {proxy.MAX_REQUEST_BYTES:,} bytes.",
        field="body",
    )
    if declared.isdigit() and int(declared) > proxy.MAX_REQUEST_BYTES:
        raise too_large
    body = request._request.read(proxy.MAX_REQUEST_BYTES + 1)
    if len(body) > proxy.MAX_REQUEST_BYTES:
        raise too_large
    return body
