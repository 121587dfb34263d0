"""The operator dashboard on the admin index: what is broken, failing or throttled right now.

A superuser (operator) sees every tenant, a tenant administrator their own tenant. Every figure
is one aggregate query (GROUP BY, conditional counts, hourly buckets), so the page costs the same
handful of queries with ten connections or a hundred thousand. A user's dashboard also lists the
webhook endpoints that fail or were disabled for a reason (one query more), and counts the
organisation-wide syncs and their users (one query, two when there are any).

Every figure carries a link to the admin changelist that lists the rows behind it, with lookups
the changelist accepts as they are (`status__exact`, `failure_streak__gt`, `error__startswith`);
those lists are tenant-scoped themselves, so a link never shows more than the figure did.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Greatest, Left, Length, TruncHour
from django.urls import reverse
from django.utils import timezone

from connections.models import (
    SECRET_WARNING_DAYS,
    Connection,
    EntraApp,
    Tenant,
    WebhookEndpoint,
)
from connections.tenancy import admin_tenant
from core.formatting import days_left, plural
from graphsync.models import OrgMember, OrgSync, SyncJob, SyncRun

HOURS = 24
#: apps listed by name; past this the card links to the app list
APP_LIMIT = 10
#: webhook endpoints listed; past this the card links to the endpoint list
ENDPOINT_LIMIT = 10
TOP_ERRORS = 5
# Errors are grouped by their first characters, not their whole text: Microsoft's messages end
# in a trace id, a correlation id and a timestamp (AADSTS…: … Trace ID: … Timestamp: …), so two
# occurrences of one error never have the same full text. The prefix is also what the link
# filters on (`…__startswith=`), which keeps the URL short whatever the error's length.
ERROR_PREFIX = 100

# The statuses whose reason is an error someone has to act on (disabled and disconnected are
# somebody's decision, and their reason says who).
ERROR_STATUSES = (Connection.Status.RECONNECT_NEEDED, Connection.Status.APP_CREDENTIALS_BROKEN)


@dataclass(frozen=True)
class Counter:
    label: str
    count: int
    url: str
    tone: str  # ok, warn, bad or none (core.formatting.TONE_COLOURS)


@dataclass(frozen=True)
class AppProblem:
    name: str
    tenant: str
    problems: list[str]
    url: str


@dataclass(frozen=True)
class EndpointProblem:
    name: str
    tenant: str
    problem: str
    url: str


@dataclass(frozen=True)
class ErrorSource:
    count: int
    noun: str  # "sync job", "connection", "failed run"
    url: str
    suffix: str = ""

    @property
    def label(self) -> str:
        return f"{plural(self.count, self.noun)}{self.suffix}"


@dataclass
class ErrorLine:
    text: str
    truncated: bool
    sources: list[ErrorSource] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(source.count for source in self.sources)


@dataclass(frozen=True)
class Dashboard:
    tenant: Tenant | None  # None: every tenant
    since: datetime
    connections: list[Counter]
    apps: list[AppProblem]
    more_apps: bool
    jobs: list[Counter]
    jobs_total: int  # jobs in any of the `jobs` counters (one job can be in several)
    hours: list[datetime]
    throttled: list[int]
    synced: list[int]
    errors: list[ErrorLine]
    webhooks: list[EndpointProblem] = field(default_factory=list)
    more_webhooks: bool = False
    orgs: list[Counter] = field(default_factory=list)  # empty: no organisation-wide sync

    @property
    def connections_total(self) -> int:
        return sum(counter.count for counter in self.connections)


def for_user(user) -> Dashboard | None:
    """The dashboard of a user's scope, with its failing webhook endpoints, or None for a staff
    user who administers no tenant."""
    if user.is_active and user.is_superuser:
        tenant = None
    else:
        tenant = admin_tenant(user)
        if tenant is None:
            return None
    endpoints, more = failing_endpoints(tenant)
    return replace(gather(tenant), webhooks=endpoints, more_webhooks=more, orgs=org_syncs(tenant))


def gather(tenant: Tenant | None, now: datetime | None = None) -> Dashboard:
    """The figures of one tenant, or of every tenant when `tenant` is None: seven queries."""
    now = now or timezone.now()
    # Whole UTC hours, the current (partial) one last.
    last_hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = [last_hour - timedelta(hours=HOURS - 1 - i) for i in range(HOURS)]
    since = hours[0]
    apps, more_apps = _app_problems(tenant, timezone.localdate(now))
    throttled, synced = _hourly(tenant, hours)
    jobs, jobs_total = _jobs(tenant)
    return Dashboard(
        tenant=tenant,
        since=since,
        connections=_connections(tenant),
        apps=apps,
        more_apps=more_apps,
        jobs=jobs,
        jobs_total=jobs_total,
        hours=hours,
        throttled=throttled,
        synced=synced,
        errors=_errors(tenant, since),
    )


# --- the figures -------------------------------------------------------------------------------


def _scoped(queryset, tenant: Tenant | None, lookup: str = "tenant"):
    return queryset if tenant is None else queryset.filter(**{lookup: tenant.pk})


def _changelist(model: str, **filters) -> str:
    url = reverse(f"admin:{model}_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


def _connections(tenant: Tenant | None) -> list[Counter]:
    counts = dict(
        _scoped(Connection.objects, tenant, "app__tenant")
        .values_list("status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    tones = Connection.STATUS_TONES
    return [
        Counter(
            label=status.label,
            count=counts.get(status.value, 0),
            url=_changelist("connections_connection", status__exact=status.value),
            tone=tones.get(status, "none") if counts.get(status.value) else "none",
        )
        for status in Connection.Status
    ]


def _app_problems(tenant: Tenant | None, today: date) -> tuple[list[AppProblem], bool]:
    """Active apps whose credentials are broken, or whose last valid secret or certificate is
    gone or expires within SECRET_WARNING_DAYS.

    The latest expiry counts, not each credential's: an old secret kept until it runs out while
    its successor already works is the rotation Microsoft recommends, not a problem (the
    app list's "Secret expiry" column reads the same way)."""
    horizon = today + timedelta(days=SECRET_WARNING_DAYS)
    broken = EntraApp.CredentialStatus.BROKEN
    rows = list(
        _scoped(EntraApp.objects.filter(is_active=True), tenant)
        .annotate(
            secret_until=Max("secrets__expires_on"),
            certificate_until=Max("certificates__expires_on"),
        )
        # Greatest() is NULL on SQLite as soon as one side is: coalesce each side to the other.
        .annotate(
            valid_until=Greatest(
                Coalesce("secret_until", "certificate_until"),
                Coalesce("certificate_until", "secret_until"),
            )
        )
        .filter(
            Q(credentials_status=broken) | Q(valid_until__isnull=True) | Q(valid_until__lt=horizon)
        )
        .select_related("tenant")
        .order_by(
            Case(When(credentials_status=broken, then=Value(0)), default=Value(1)),
            F("valid_until").asc(nulls_first=True),
            "name",
        )[: APP_LIMIT + 1]
    )
    problems = [
        AppProblem(
            name=app.name,
            tenant=app.tenant.name,
            problems=_describe_credentials(app, today),
            url=reverse("admin:connections_entraapp_change", args=[app.pk]),
        )
        for app in rows[:APP_LIMIT]
    ]
    return problems, len(rows) > APP_LIMIT


def _describe_credentials(app: EntraApp, today: date) -> list[str]:
    problems = []
    if app.credentials_status == EntraApp.CredentialStatus.BROKEN:
        problems.append("credentials broken")
    valid_until = app.valid_until
    if valid_until is None:
        problems.append("no secret or certificate")
    elif valid_until < today:
        problems.append(f"expired on {valid_until:%Y-%m-%d}")
    elif valid_until < today + timedelta(days=SECRET_WARNING_DAYS):
        days = (valid_until - today).days
        problems.append(days_left(days))
    return problems


def failing_endpoints(tenant: Tenant | None) -> tuple[list[EndpointProblem], bool]:
    """Webhook endpoints whose attempts fail (since `failing_since`) or that were disabled for
    a reason (a 410, days of failures): disabled first, then the longest failing. One query."""
    trouble = Q(failing_since__isnull=False) | (Q(enabled=False) & ~Q(disabled_reason=""))
    rows = list(
        _scoped(WebhookEndpoint.objects.filter(trouble), tenant)
        .select_related("tenant")
        .only("url", "description", "enabled", "disabled_reason", "failing_since", "tenant__name")
        .order_by("enabled", F("failing_since").asc(nulls_last=True), "url")[: ENDPOINT_LIMIT + 1]
    )
    problems = [
        EndpointProblem(
            name=str(endpoint),
            tenant=endpoint.tenant.name,
            problem=_describe_endpoint(endpoint),
            url=reverse("admin:connections_webhookendpoint_change", args=[endpoint.pk]),
        )
        for endpoint in rows[:ENDPOINT_LIMIT]
    ]
    return problems, len(rows) > ENDPOINT_LIMIT


def _describe_endpoint(endpoint: WebhookEndpoint) -> str:
    if not endpoint.enabled and endpoint.disabled_reason:
        return f"disabled: {endpoint.disabled_reason}"
    failing = f"every attempt failing since {endpoint.failing_since:%Y-%m-%d %H:%M} UTC"
    return failing if endpoint.enabled else f"disabled; {failing}"


def _jobs(tenant: Tenant | None) -> tuple[list[Counter], int]:
    failing = Q(state=SyncJob.State.FAILING)
    disabled = Q(state=SyncJob.State.DISABLED) & ~Q(disabled_reason="")
    streak = Q(failure_streak__gt=0)
    counts = _scoped(SyncJob.objects, tenant).aggregate(
        any=Count("pk", filter=failing | disabled | streak),
        failing=Count("pk", filter=failing),
        disabled=Count("pk", filter=disabled),
        streak=Count("pk", filter=streak),
    )
    jobs = "graphsync_syncjob"
    counters = [
        Counter(
            "Failing (retrying)",
            counts["failing"],
            _changelist(jobs, state__exact=SyncJob.State.FAILING),
            "bad" if counts["failing"] else "none",
        ),
        Counter(
            "Disabled with a reason",
            counts["disabled"],
            # `> ''`: the changelist's way of saying "not empty".
            _changelist(jobs, state__exact=SyncJob.State.DISABLED, disabled_reason__gt=""),
            "warn" if counts["disabled"] else "none",
        ),
        Counter(
            "Failed last time",
            counts["streak"],
            _changelist(jobs, failure_streak__gt=0),
            "warn" if counts["streak"] else "none",
        ),
    ]
    return counters, counts["any"]


def org_syncs(tenant: Tenant | None) -> list[Counter]:
    """Organisation-wide syncs on and paused, their users in scope, and those whose every job
    is stopped; nothing when the scope has none."""
    orgs = _scoped(OrgSync.objects, tenant).aggregate(
        total=Count("pk"),
        on=Count("pk", filter=Q(enabled=True, paused_at__isnull=True)),
        paused=Count("pk", filter=Q(paused_at__isnull=False)),
    )
    if not orgs["total"]:
        return []
    # The "disabled" mailbox status of graphsync.orgprogress (`user_jobs`): jobs, none of them
    # enabled, counted by two EXISTS per member in one aggregate.
    jobs = SyncJob.objects.filter(
        connection_id=OuterRef("org__connection_id"), mailbox=OuterRef("graph_id")
    )
    stopped = Exists(jobs) & ~Exists(jobs.filter(enabled=True))
    members = _scoped(OrgMember.objects.filter(state=OrgMember.State.IN_SCOPE), tenant).aggregate(
        in_scope=Count("pk"), stopped=Count("pk", filter=stopped)
    )
    syncs, users = "graphsync_orgsync", "graphsync_orgmember"
    in_scope = OrgMember.State.IN_SCOPE
    return [
        Counter("On", orgs["on"], _changelist(syncs, enabled__exact=1, paused="no"), "none"),
        Counter(
            "Paused",
            orgs["paused"],
            _changelist(syncs, paused="yes"),
            "bad" if orgs["paused"] else "none",
        ),
        Counter(
            "Users in scope", members["in_scope"], _changelist(users, state__exact=in_scope), "none"
        ),
        Counter(
            "Users with every job stopped",
            members["stopped"],
            _changelist(users, state__exact=in_scope, mailbox="disabled"),
            "warn" if members["stopped"] else "none",
        ),
    ]


def _hourly(tenant: Tenant | None, hours: list[datetime]) -> tuple[list[int], list[int]]:
    """Throttled responses and items written (created + updated + deleted) per hour, by the
    hour each run started in."""
    rows = (
        _scoped(SyncRun.objects.filter(started_at__gte=hours[0]), tenant)
        .annotate(hour=TruncHour("started_at", tzinfo=UTC))
        .values("hour")
        .annotate(
            throttled=Sum("throttled"),
            items=Sum(F("created") + F("updated") + F("deleted"), output_field=IntegerField()),
        )
        .order_by()
    )
    by_hour = {row["hour"]: row for row in rows}
    throttled = [(by_hour.get(hour) or {}).get("throttled") or 0 for hour in hours]
    synced = [(by_hour.get(hour) or {}).get("items") or 0 for hour in hours]
    return throttled, synced


def _errors(tenant: Tenant | None, since: datetime) -> list[ErrorLine]:
    """The most frequent errors across failing jobs, connections needing someone, and the runs
    that failed since `since`: three grouped queries of TOP_ERRORS rows each, merged by text.

    A text outside every source's own top five is not counted in: the price of a bounded query,
    and the lines shown are still the biggest ones."""
    jobs = _top_texts(_scoped(SyncJob.objects.exclude(last_error=""), tenant), "last_error")
    connections = _top_texts(
        _scoped(
            Connection.objects.filter(status__in=ERROR_STATUSES).exclude(status_reason=""),
            tenant,
            "app__tenant",
        ),
        "status_reason",
    )
    runs = _top_texts(
        _scoped(
            SyncRun.objects.filter(outcome=SyncRun.Outcome.FAILED, started_at__gte=since).exclude(
                error=""
            ),
            tenant,
        ),
        "error",
    )
    lines: dict[str, ErrorLine] = {}

    def add(rows: Iterable[dict], noun: str, url_for, suffix: str = "") -> None:
        for row in rows:
            line = lines.setdefault(row["text"], ErrorLine(row["text"], False))
            line.truncated = line.truncated or row["length"] > ERROR_PREFIX
            line.sources.append(ErrorSource(row["n"], noun, url_for(row["text"]), suffix))

    add(
        jobs,
        "sync job",
        lambda text: _changelist("graphsync_syncjob", last_error__startswith=text),
    )
    add(
        connections,
        "connection",
        lambda text: _changelist(
            "connections_connection",
            status__in=",".join(ERROR_STATUSES),
            status_reason__startswith=text,
        ),
    )
    add(
        runs,
        "failed run",
        lambda text: _changelist(
            "graphsync_syncrun",
            outcome__exact=SyncRun.Outcome.FAILED,
            started_at__gte=since.isoformat(),
            error__startswith=text,
        ),
        f" in {HOURS} h",
    )
    ranked = sorted(lines.values(), key=lambda line: (-line.count, line.text))
    return ranked[:TOP_ERRORS]


def _top_texts(queryset, column: str) -> list[dict]:
    return list(
        queryset.annotate(text=Left(column, ERROR_PREFIX))
        .values("text")
        .annotate(n=Count("pk"), length=Max(Length(column)))
        .order_by("-n", "text")[:TOP_ERRORS]
    )
