"""What a member sees of their syncs: per job the live record count, the last finished run, the
run under way and what is wrong, in plain words. Three queries for any number of jobs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from graphsync.models import SyncJob, SyncRun

# Waiting for a worker or for Microsoft: the page keeps watching. RUNNING counts only with a
# live run (JobStatus.current), since a worker that died leaves the state behind.
PENDING = (SyncJob.State.QUEUED, SyncJob.State.WAITING)


@dataclass
class JobStatus:
    job: SyncJob
    live: int
    last_run: SyncRun | None  # the latest finished run
    current: SyncRun | None  # the run under way

    @property
    def busy(self) -> bool:
        return self.job.enabled and (self.job.state in PENDING or self.current is not None)

    @property
    def problem(self) -> str:
        job = self.job
        if not job.enabled:
            return f"Paused: {job.disabled_reason or 'turned off by your administrator.'}"
        if job.state == SyncJob.State.WAITING:
            return "Microsoft asked Graphport to slow down; the sync carries on by itself shortly."
        if job.last_error:
            return f"The last attempt failed and will be retried: {job.last_error}"
        return ""

    def as_json(self) -> dict[str, Any]:
        job, current, last = self.job, self.current, self.last_run
        return {
            "id": job.pk,
            "resource": job.resource,
            "folder": job.folder,
            "state": job.state,
            "state_label": job.get_state_display(),
            "enabled": job.enabled,
            "busy": self.busy,
            "live": self.live,
            "last_run_at": last.finished_at.isoformat() if last and last.finished_at else None,
            "last_outcome": last.outcome if last else None,
            "next_run_at": job.next_run_at.isoformat() if job.enabled else None,
            "problem": self.problem,
            "progress": (
                {
                    "started_at": current.started_at.isoformat(),
                    "pages": current.pages,
                    "created": current.created,
                    "updated": current.updated,
                    "deleted": current.deleted,
                }
                if current
                else None
            ),
        }


def _latest_run(**filters: Any) -> Subquery:
    runs = SyncRun.objects.filter(job=OuterRef("pk"), **filters).order_by("-started_at", "-id")
    return Subquery(runs.values("pk")[:1])


def of_connections(connection_ids: Iterable[int]) -> dict[int, list[JobStatus]]:
    """JobStatus lists by connection id, in resource and folder order."""
    jobs = list(
        SyncJob.objects.filter(connection_id__in=list(connection_ids))
        .annotate(
            latest_run_id=_latest_run(),
            finished_run_id=_latest_run(finished_at__isnull=False),
        )
        .order_by("connection_id", "resource", "folder")
    )
    if not jobs:
        return {}
    runs = SyncRun.objects.in_bulk(
        ({job.latest_run_id for job in jobs} | {job.finished_run_id for job in jobs}) - {None}
    )
    now = timezone.now()
    statuses: dict[int, list[JobStatus]] = defaultdict(list)
    for job in jobs:
        latest = runs.get(job.latest_run_id)
        # A "running" run whose lease ran out belonged to a worker that died: not live progress.
        alive = job.lease_expires_at is not None and job.lease_expires_at > now
        current = latest if latest and latest.outcome == SyncRun.Outcome.RUNNING and alive else None
        statuses[job.connection_id].append(
            JobStatus(job, job.live_count, runs.get(job.finished_run_id), current)
        )
    return dict(statuses)
