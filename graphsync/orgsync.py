"""Organisation-wide sync: every user in scope of an app-only connection gets the jobs a delegated
connection would (mail folders, calendar, contacts, OneDrive), addressed as `/users/{id}/…`
(docs/architecture.md, "Organisation-wide sync").

Who is in scope comes from the connection's own directory jobs: the users job's records are the
directory, the groups job's records carry each group's members (kept whole across delta rounds:
`merge_group`). `reconcile` compares that with the organisation's members after every directory
run and whenever an administrator changes the settings: users who came into scope get their
jobs (or get back the ones stopped when they left), users who left have their jobs stopped,
their subscriptions taken down, and their records kept or marked deleted as the administrator
chose. What the app may read comes from the application permissions (`roles`) of its token.

A user's own failure (no mailbox, a mailbox an Exchange access policy closes to the app) stops
that user's jobs only (graphsync.engine); a permission missing for the whole app pauses the
organisation's sync once (`pause`), with one notice, instead of failing every user's jobs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from connections import audit
from connections.models import AuditEvent, Connection
from connections.notices import tenant_admin_emails
from core import mail, queue
from graphsync import resources, store
from graphsync.models import OrgMember, OrgSync, Record, Resource, Subscription, SyncJob
from graphsync.resources import MEMBERS

logger = logging.getLogger(__name__)

# The application permissions that make each resource readable for every user (Graph's
# permission names, compared in lower case).
ROLE_RESOURCES = {
    "mail.read": Resource.MAIL,
    "mail.readwrite": Resource.MAIL,
    "calendars.read": Resource.CALENDAR,
    "calendars.readwrite": Resource.CALENDAR,
    "contacts.read": Resource.CONTACTS,
    "contacts.readwrite": Resource.CONTACTS,
    "files.read.all": Resource.DRIVE,
    "files.readwrite.all": Resource.DRIVE,
    "sites.read.all": Resource.DRIVE,
    "sites.readwrite.all": Resource.DRIVE,
}

# Why a user's jobs are stopped. Each is undone by reconcile when the cause goes away; other
# reasons (an administrator's, Graph's) are not.
LEFT_SCOPE = "The user is no longer in the organisation-wide sync's scope."
LEFT_DIRECTORY = "The user was deleted from the directory."
ACCOUNT_DISABLED = "The user's account is disabled in the directory."
SYNC_OFF = "Organisation-wide sync is turned off."
PAUSED = "Organisation-wide sync is paused: {reason}"
UNDOABLE = (LEFT_SCOPE, LEFT_DIRECTORY, ACCOUNT_DISABLED, SYNC_OFF)


@dataclass(frozen=True)
class Person:
    graph_id: str
    user_principal_name: str
    display_name: str
    mail: str
    enabled: bool

    @classmethod
    def of(cls, data: dict[str, Any]) -> Person:
        return cls(
            graph_id=str(data.get("id") or ""),
            user_principal_name=str(data.get("userPrincipalName") or "")[:255],
            display_name=str(data.get("displayName") or "")[:255],
            mail=str(data.get("mail") or "")[:255],
            enabled=data.get("accountEnabled") is not False,
        )


@dataclass
class Summary:
    """What one reconcile changed."""

    in_scope: int = 0
    joined: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    jobs_created: int = 0

    def __str__(self) -> str:
        return (
            f"{self.in_scope} in scope, {len(self.joined)} joined, {len(self.left)} left, "
            f"{self.jobs_created} jobs created"
        )


# --- what the app may read, and who is in scope ---------------------------------------------------


def granted_resources(connection: Connection) -> list[str]:
    """The resources the app-only token's application permissions make readable."""
    roles = {role.lower() for role in connection.granted_scopes.split()}
    found = {resource for role, resource in ROLE_RESOURCES.items() if role in roles}
    return [resource for resource in Resource.values if resource in found]


def wanted_pairs(connection: Connection) -> list[tuple[str, str]]:
    """(resource, folder) of each job a user in scope gets."""
    pairs: list[tuple[str, str]] = []
    for resource in granted_resources(connection):
        if resource == Resource.MAIL:
            pairs += [(Resource.MAIL, folder) for folder in resources.mail_folders()]
        else:
            pairs.append((resource, ""))
    return pairs


def _directory_job(connection: Connection, resource: str) -> SyncJob | None:
    return SyncJob.objects.filter(connection=connection, mailbox="", resource=resource).first()


def directory(connection: Connection) -> dict[str, Person]:
    """The directory's users, as the connection's users job last saw them."""
    job = _directory_job(connection, Resource.USERS)
    if job is None:
        return {}
    rows = Record.objects.filter(job=job, deleted_at__isnull=True).values_list("data", flat=True)
    people = (Person.of(data) for data in rows.iterator(chunk_size=2000) if isinstance(data, dict))
    return {person.graph_id: person for person in people if person.graph_id}


def group_members(connection: Connection, group_ids: list[str]) -> set[str]:
    job = _directory_job(connection, Resource.GROUPS)
    if job is None or not group_ids:
        return set()
    members: set[str] = set()
    rows = Record.objects.filter(job=job, graph_id__in=group_ids, deleted_at__isnull=True)
    for data in rows.values_list("data", flat=True):
        if isinstance(data, dict):
            members.update(str(member) for member in data.get(MEMBERS, []))
    return members


def scope_of(org: OrgSync, people: dict[str, Person]) -> tuple[dict[str, Person], dict[str, str]]:
    """The people in scope, and why each of the others known to the organisation is not."""
    if org.scope == OrgSync.Scope.GROUPS:
        chosen = group_members(org.connection, [str(g) for g in org.groups])
        candidates = {gid: p for gid, p in people.items() if gid in chosen}
    elif org.scope == OrgSync.Scope.LISTED:
        listed = {str(entry).lower() for entry in org.users}
        candidates = {
            gid: p
            for gid, p in people.items()
            if gid.lower() in listed or p.user_principal_name.lower() in listed
        }
    else:
        candidates = dict(people)
    out: dict[str, str] = {}
    inside: dict[str, Person] = {}
    for gid, person in candidates.items():
        if not person.enabled:
            out[gid] = ACCOUNT_DISABLED
        elif org.mailbox_only and not person.mail:
            out[gid] = LEFT_SCOPE
        else:
            inside[gid] = person
    if not org.alongside_delegated and inside:
        for gid in _connected_themselves(org.connection, list(inside)):
            inside.pop(gid)
            out[gid] = LEFT_SCOPE
    return inside, out


def _connected_themselves(connection: Connection, graph_ids: list[str]) -> set[str]:
    """Users of these ids with a live delegated connection of their own in the same Graphport
    tenant and Microsoft tenant: synced through that one, not twice."""
    return set(
        Connection.objects.filter(
            app__tenant_id=connection.app.tenant_id,
            kind=Connection.Kind.DELEGATED,
            ms_tenant_id=connection.ms_tenant_id,
            ms_object_id__in=graph_ids,
            status__in=Connection.LIVE_STATUSES,
        ).values_list("ms_object_id", flat=True)
    )


# --- reconcile ----------------------------------------------------------------------------------


def reconcile(org_id: int) -> Summary:
    """Bring the organisation's members and their jobs in line with its scope. Safe to run at
    any time and twice: it takes the organisation's row lock."""
    now = timezone.now()
    summary = Summary()
    with transaction.atomic():
        org = (
            OrgSync.objects.select_for_update(of=("self",))
            .select_related("connection__app")
            .filter(pk=org_id)
            .first()
        )
        if org is None:
            return summary
        connection = org.connection
        if not org.enabled or org.paused_at is not None:
            # Off or paused is not leaving: members, records and cursors stay as they are and
            # the jobs stay stopped (pause stopped them), to carry on where they were.
            if not org.enabled:
                SyncJob.objects.filter(connection=connection, enabled=True).exclude(
                    mailbox=""
                ).disable(SYNC_OFF)
            OrgSync.objects.filter(pk=org.pk).update(reconciled_at=now)
            return summary
        people = directory(connection)
        inside, out = scope_of(org, people)
        summary.in_scope = len(inside)
        members = {m.graph_id: m for m in OrgMember.objects.filter(org=org)}
        for gid, member in members.items():
            if member.state == OrgMember.State.IN_SCOPE and gid not in inside:
                reason = out.get(gid) or (LEFT_DIRECTORY if gid not in people else LEFT_SCOPE)
                _leave(org, member, reason, now)
                summary.left.append(gid)
        for gid, person in inside.items():
            member = members.get(gid)
            if member is None or member.state != OrgMember.State.IN_SCOPE:
                summary.joined.append(gid)
            _join(org, member, person, now)
        summary.jobs_created = _ensure_jobs(org, list(inside), now)
        OrgSync.objects.filter(pk=org.pk).update(reconciled_at=now)
        if summary.joined:
            # Their jobs are due now: dispatch them now rather than at beat's next tick.
            queue.enqueue("graphsync.tasks.dispatch_due_syncs")
    if summary.joined or summary.left:
        logger.info("organisation sync %s: %s", org_id, summary)
    return summary


def _join(org: OrgSync, member: OrgMember | None, person: Person, now: datetime) -> None:
    fields = {
        "user_principal_name": person.user_principal_name,
        "display_name": person.display_name,
        "mail": person.mail,
    }
    if member is None:
        OrgMember.objects.create(
            org=org, tenant_id=org.tenant_id, graph_id=person.graph_id, joined_at=now, **fields
        )
        return
    changed = {name: value for name, value in fields.items() if getattr(member, name) != value}
    if member.state != OrgMember.State.IN_SCOPE:
        changed |= {"state": OrgMember.State.IN_SCOPE, "left_reason": "", "left_at": None}
        changed["joined_at"] = now
    if changed:
        OrgMember.objects.filter(pk=member.pk).update(**changed)


def _leave(org: OrgSync, member: OrgMember, reason: str, now: datetime) -> None:
    OrgMember.objects.filter(pk=member.pk).update(
        state=OrgMember.State.LEFT, left_reason=reason[:200], left_at=now
    )
    jobs = SyncJob.objects.filter(connection_id=org.connection_id, mailbox=member.graph_id)
    jobs.filter(enabled=True).disable(reason)
    if org.retention == OrgSync.Retention.DELETE:
        for job in jobs:
            store.delete_all(job, now)
    watched = list(Subscription.objects.filter(job__in=jobs).values_list("job_id", flat=True))
    for job_id in watched:  # taken down at Microsoft now, not at beat's next check
        queue.enqueue("graphsync.tasks.maintain_subscription", job_id)


def _ensure_jobs(org: OrgSync, graph_ids: list[str], now: datetime) -> int:
    """Create the missing jobs of the users in scope, and bring back those stopped for a reason
    that no longer holds. Returns how many were created."""
    connection = org.connection
    pairs = wanted_pairs(connection)
    if not graph_ids or not pairs:
        return 0
    mine = SyncJob.objects.filter(connection=connection).exclude(mailbox="")
    existing = set(mine.values_list("mailbox", "resource", "folder"))
    missing = [
        SyncJob(
            connection=connection,
            tenant_id=org.tenant_id,
            mailbox=gid,
            resource=resource,
            folder=folder,
            next_run_at=now,
        )
        for gid in graph_ids
        for resource, folder in pairs
        if (gid, resource, folder) not in existing
    ]
    SyncJob.objects.bulk_create(missing, batch_size=1000, ignore_conflicts=True)
    stopped = mine.filter(mailbox__in=graph_ids, enabled=False).filter(
        Q(disabled_reason__in=UNDOABLE) | Q(disabled_reason__startswith=PAUSED.split("{")[0])
    )
    stopped.update(
        enabled=True,
        state=SyncJob.State.IDLE,
        disabled_reason="",
        failure_streak=0,
        next_run_at=now,
    )
    return len(missing)


# --- what the engine tells us ---------------------------------------------------------------------


def directory_changed(job: SyncJob) -> None:
    """A directory run of an app-only connection ended: once it commits, reconcile its
    organisation (a task; nothing when it has no organisation-wide sync turned on)."""
    if job.mailbox or job.resource not in (Resource.USERS, Resource.GROUPS):
        return
    org_id = (
        OrgSync.objects.filter(connection_id=job.connection_id, enabled=True)
        .values_list("pk", flat=True)
        .first()
    )
    if org_id is not None:
        queue.enqueue("graphsync.tasks.reconcile_org", org_id)


def app_lacks(job: SyncJob, code: str) -> bool:
    """Whether a 403 to an organisation-wide job means the whole app lacks the permission
    (Authorization_RequestDenied; or the token's roles no longer grant the job's resource),
    rather than this user's mailbox being closed to the app (an Exchange application access
    policy or RBAC for Applications answers ErrorAccessDenied for that mailbox alone)."""
    if code == "Authorization_RequestDenied":
        return True
    connection = Connection.objects.only("granted_scopes").get(pk=job.connection_id)
    return job.resource not in granted_resources(connection)


def stop_user(job: SyncJob, reason: str, resources_: tuple[str, ...]) -> int:
    """Stop one user's jobs of these resources, with the reason shown; others carry on."""
    return (
        SyncJob.objects.filter(
            connection_id=job.connection_id, mailbox=job.mailbox, resource__in=resources_
        )
        .filter(enabled=True)
        .disable(reason)
    )


# --- pausing ------------------------------------------------------------------------------------


def pause(connection_id: int, reason: str) -> bool:
    """A permission the whole app lacks: stop the organisation's jobs with one notice to the
    tenant's administrators, once. False when it was paused already (or has no org sync)."""
    now = timezone.now()
    with transaction.atomic():
        paused = OrgSync.objects.filter(connection_id=connection_id, paused_at__isnull=True).update(
            paused_at=now, paused_reason=reason[:1000]
        )
        if not paused:
            return False
        SyncJob.objects.filter(connection_id=connection_id, enabled=True).exclude(
            mailbox=""
        ).disable(PAUSED.format(reason=reason))
        connection = Connection.objects.select_related("app").get(pk=connection_id)
        audit.record(
            AuditEvent.Kind.ORG_SYNC_PAUSED,
            f"Organisation-wide sync paused: {reason}"[:1000],
            connection=connection,
        )
        org_id = OrgSync.objects.values_list("pk", flat=True).get(connection_id=connection_id)
        notice = mail.render(
            "org_sync_paused",
            {
                "app": connection.app,
                "ms_tenant": connection.ms_tenant_id,
                "reason": reason,
                "link": settings.PORTAL_BASE_URL
                + reverse("admin:graphsync_orgsync_change", args=[org_id]),
            },
            tenant_admin_emails(connection.app.tenant_id),
        )
        transaction.on_commit(lambda: mail.send(notice))
    logger.warning("organisation sync of connection %s paused: %s", connection_id, reason)
    return True


def resume(org: OrgSync, actor=None) -> Summary:
    """The administrator fixed the permission: carry on where the jobs stopped."""
    with transaction.atomic():
        resumed = OrgSync.objects.filter(pk=org.pk, paused_at__isnull=False).update(
            paused_at=None, paused_reason=""
        )
        if resumed:
            audit.record(
                AuditEvent.Kind.ORG_SYNC_RESUMED,
                "Organisation-wide sync resumed.",
                connection=org.connection,
                actor=actor,
            )
    return reconcile(org.pk)


def settings_saved(org: OrgSync, actor, changed: list[str]) -> None:
    """An administrator turned the sync on or changed who is in scope: audited, and the
    organisation reconciled once the change commits."""
    what = ", ".join(changed) if changed else "created"
    audit.record(
        AuditEvent.Kind.ORG_SYNC_CHANGED,
        f"Organisation-wide sync {'on' if org.enabled else 'off'}; changed: {what}.",
        connection=org.connection,
        actor=actor,
        scope=org.scope,
        enabled=org.enabled,
    )
    queue.enqueue("graphsync.tasks.reconcile_org", org.pk)
