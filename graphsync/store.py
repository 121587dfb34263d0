"""Writing a page of Graph items as records: bulk upserts by (job, Graph id), soft deletions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from graphsync.models import Record, SyncJob
from graphsync.resources import Spec, is_removal

UPDATE_FIELDS = [
    "change_key",
    "title",
    "occurred_at",
    "data",
    "generation",
    "deleted_at",
    "updated_at",
]


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    deleted: int = 0

    def add(self, other: Counts) -> None:
        self.created += other.created
        self.updated += other.updated
        self.deleted += other.deleted


def apply_page(job: SyncJob, spec: Spec, items: list[dict[str, Any]], now: datetime) -> Counts:
    """Upsert the page's items and mark its removals deleted. Idempotent: a page replayed after
    a worker died, or an item Graph sends twice, ends in the same rows."""
    latest: dict[str, dict[str, Any]] = {}
    for item in items:  # a delta may repeat an item: the last one wins
        graph_id = item.get("id")
        if graph_id:
            latest[str(graph_id)] = item
    live = {gid: item for gid, item in latest.items() if not is_removal(item)}
    removed = [gid for gid, item in latest.items() if is_removal(item)]
    counts = Counts()
    if live:
        existing = set(
            Record.objects.filter(job=job, graph_id__in=list(live)).values_list(
                "graph_id", flat=True
            )
        )
        Record.objects.bulk_create(
            [
                Record(
                    job_id=job.pk,
                    connection_id=job.connection_id,
                    tenant_id=job.tenant_id,
                    resource=job.resource,
                    graph_id=gid,
                    change_key=spec.change_key_of(item),
                    title=spec.title_of(item)[:500],
                    occurred_at=spec.date_of(item),
                    data=item,
                    generation=job.generation,
                    deleted_at=None,
                    created_at=now,
                    updated_at=now,
                )
                for gid, item in live.items()
            ],
            update_conflicts=True,
            unique_fields=["job", "graph_id"],
            update_fields=UPDATE_FIELDS,
        )
        counts.updated = len(existing)
        counts.created = len(live) - len(existing)
    if removed:
        counts.deleted = Record.objects.filter(
            job=job, graph_id__in=removed, deleted_at__isnull=True
        ).update(deleted_at=now, updated_at=now)
    return counts


def finish_resync(job: SyncJob, now: datetime) -> int:
    """After a full resync: what it did not return again is gone at Microsoft."""
    return Record.objects.filter(
        job=job, deleted_at__isnull=True, generation__lt=job.generation
    ).update(deleted_at=now, updated_at=now)
