"""The sync events a tenant's backend receives (connections.events sends them): a run that
changed records, or one that failed.

Raised in the transaction that ends the run, so a run's end and its event commit together.
sync.completed names where the run's changes are in the records feed (graphsync.feed.span), so
a receiver reads exactly those. Runs that changed nothing raise no event unless someone asked
for them (a first sync, run now, a full resync): every poll of every job would otherwise be one.
"""

from __future__ import annotations

from typing import Any

from connections import events
from connections.models import EventType
from graphsync import feed
from graphsync.models import SyncJob, SyncRun

#: how much of a run's documents a sync.completed carries inline (endpoints with records inline)
INLINE_MAX_BYTES = 256 * 1024
ASKED_FOR = {SyncRun.Trigger.FIRST, SyncRun.Trigger.MANUAL, SyncRun.Trigger.RESYNC}


def _data(job: SyncJob, run_: SyncRun) -> dict[str, Any]:
    return {
        "connection": job.connection_id,
        "job": job.pk,
        "resource": job.resource,
        "folder": job.folder or None,
        "run": run_.pk,
        "trigger": run_.trigger,
        "started_at": run_.started_at.isoformat().replace("+00:00", "Z"),
        "finished_at": run_.finished_at.isoformat().replace("+00:00", "Z")
        if run_.finished_at
        else None,
    }


def completed(job: SyncJob, run_: SyncRun) -> None:
    changed = run_.created + run_.updated + run_.deleted
    if not changed and run_.trigger not in ASKED_FOR:
        return
    records = None
    if run_.feed_first_seq is not None:
        records = feed.span(
            job.connection_id, job.resource, run_.feed_first_seq, run_.feed_last_seq
        )
    data = {
        **_data(job, run_),
        "created": run_.created,
        "updated": run_.updated,
        "deleted": run_.deleted,
        "records": records,
    }
    events.emit(EventType.SYNC_COMPLETED, job.tenant_id, data, inline=lambda: _inline(job, run_))


def _inline(job: SyncJob, run_: SyncRun) -> dict[str, Any]:
    """The run's records themselves, for endpoints that take them inline, up to
    INLINE_MAX_BYTES of documents; past that the receiver reads the feed between the cursors."""
    if run_.feed_first_seq is None:
        return {"records_inline": [], "records_complete": True}
    found, complete = feed.between(
        job.connection_id,
        job.resource,
        run_.feed_first_seq,
        run_.feed_last_seq,
        INLINE_MAX_BYTES,
    )
    return {"records_inline": found, "records_complete": complete}


def failed(job: SyncJob, run_: SyncRun, error: str, streak: int) -> None:
    """Once per failing spell (the first failure after a success), and for failures that
    disable the job: the retries in between would repeat the same news."""
    if streak > 1:
        return
    data = {**_data(job, run_), "error": error[:500], "failure_streak": streak}
    events.emit(EventType.SYNC_FAILED, job.tenant_id, data)
