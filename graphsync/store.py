"""Writing a page of Graph items as records: bulk upserts by (job, Graph id), soft deletions.

Every write also moves the records feed (graphsync.feed; docs/architecture.md, "The records
feed"). A transaction that writes records of a (connection, resource) first takes the next seq of
that feed's RecordFeed row, which holds the row's lock until commit, and stamps every row it
writes with it. Writers of one feed thus commit in seq order: once a reader sees a row of seq n,
every transaction that took a lower seq has committed or rolled back, so nothing can appear
behind a reader's position (seq, id) later. Record ids (drawn from a sequence before commit) and
timestamps (taken before the transaction) make no such promise. The lock is taken right before
the writes, once the page is prepared, and only writers of the same feed wait for it (a
connection's mail folders, for instance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import orjson
import psycopg
from django.db import connection, transaction

from graphsync.models import Record, RecordFeed, SyncJob
from graphsync.resources import Spec, is_removal

UPDATE_FIELDS = [
    "change_key",
    "title",
    "occurred_at",
    "data",
    "generation",
    "deleted_at",
    "updated_at",
    "feed_seq",
]


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    #: the records feed's seqs this write took, first and last (None: nothing was written)
    first_seq: int | None = None
    last_seq: int | None = None

    def add(self, other: Counts) -> None:
        self.created += other.created
        self.updated += other.updated
        self.deleted += other.deleted
        self.took(other.first_seq)
        self.took(other.last_seq)

    def took(self, seq: int | None) -> None:
        if seq is None:
            return
        self.first_seq = seq if self.first_seq is None else min(self.first_seq, seq)
        self.last_seq = seq if self.last_seq is None else max(self.last_seq, seq)


def apply_page(job: SyncJob, spec: Spec, items: list[dict[str, Any]], now: datetime) -> Counts:
    """Upsert the page's items and mark its removals deleted. Idempotent: a page replayed after
    a worker died, or an item Graph sends twice, ends in the same rows. Runs in the caller's
    transaction, or in one of its own."""
    latest: dict[str, dict[str, Any]] = {}
    for item in items:  # a delta may repeat an item: the last one wins
        graph_id = item.get("id")
        if graph_id:
            latest[str(graph_id)] = item
    if spec.merge is not None:
        latest = _merged(job, spec, items, latest)
    live = {gid: item for gid, item in latest.items() if not is_removal(item)}
    removed = [gid for gid, item in latest.items() if is_removal(item)]
    counts = Counts()
    if not live and not removed:
        return counts  # nothing written: the feed is not locked
    upsert = _prepared_upsert(job, spec, live, now) if live else None
    with transaction.atomic(savepoint=False):
        seq = _next_seq(job)
        counts.took(seq)
        if upsert is not None:
            existing = upsert(seq)
            counts.updated = existing
            counts.created = len(live) - existing
        if removed:
            counts.deleted = Record.objects.filter(
                job=job, graph_id__in=removed, deleted_at__isnull=True
            ).update(deleted_at=now, updated_at=now, feed_seq=seq)
    return counts


def _merged(
    job: SyncJob, spec: Spec, items: list[dict[str, Any]], latest: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Items merged, in page order, into what the job stored for them in this round (a round
    from scratch starts them afresh): replaying a page merges to the same documents."""
    stored = dict(
        Record.objects.filter(
            job=job,
            graph_id__in=list(latest),
            generation=job.generation,
            deleted_at__isnull=True,
        ).values_list("graph_id", "data")
    )
    merged: dict[str, dict[str, Any]] = {}
    for item in items:
        graph_id = str(item.get("id") or "")
        if not graph_id:
            continue
        if is_removal(item):
            merged[graph_id] = item
            continue
        previous = merged.get(graph_id) or stored.get(graph_id)
        merged[graph_id] = spec.merge(previous if isinstance(previous, dict) else None, item)
    return merged


def delete_all(job: SyncJob, now: datetime) -> Counts:
    """Mark every live record of the job deleted (a user who left an organisation-wide sync
    whose administrator chose so): receivers see them go in the feed."""
    counts = Counts()
    with transaction.atomic(savepoint=False):
        seq = _next_seq(job)
        counts.took(seq)
        counts.deleted = Record.objects.filter(job=job, deleted_at__isnull=True).update(
            deleted_at=now, updated_at=now, feed_seq=seq
        )
    SyncJob.objects.filter(pk=job.pk).update(live_count=0)
    return counts


def finish_resync(job: SyncJob, now: datetime) -> Counts:
    """After a full resync: what it did not return again is gone at Microsoft."""
    counts = Counts()
    with transaction.atomic(savepoint=False):
        seq = _next_seq(job)
        counts.took(seq)
        counts.deleted = Record.objects.filter(
            job=job, deleted_at__isnull=True, generation__lt=job.generation
        ).update(deleted_at=now, updated_at=now, feed_seq=seq)
    return counts


# One statement takes the feed's next seq and its row lock, and creates the row on the feed's
# first write; writers racing to create it meet in the unique constraint, and the loser updates
# the winner's row once it commits. PostgreSQL and SQLite (3.35 and later) both speak it.
_NEXT_SEQ = """
    INSERT INTO {table} (connection_id, resource, last_seq) VALUES (%s, %s, 1)
    ON CONFLICT (connection_id, resource) DO UPDATE SET last_seq = {table}.last_seq + 1
    RETURNING last_seq
"""


def _next_seq(job: SyncJob) -> int:
    """The seq of the current transaction's writes to the job's feed. The feed's row stays
    locked until the transaction ends: the caller must be inside one."""
    table = connection.ops.quote_name(RecordFeed._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_SEQ.format(table=table), [job.connection_id, job.resource])
        (seq,) = cursor.fetchone()
    return seq


def _prepared_upsert(
    job: SyncJob, spec: Spec, live: dict[str, dict[str, Any]], now: datetime
) -> Callable[[int], int]:
    """The upsert of the page's live items with all but the feed's seq worked out, so that the
    feed's lock is held for the write alone. Called with the seq, it returns how many of the
    rows existed before."""
    if connection.vendor == "postgresql":
        return partial(_upsert_postgresql, _upsert_params(job, spec, live, now))
    return partial(_upsert_orm, job, _rows(job, spec, live, now))


def _rows(job: SyncJob, spec: Spec, live: dict[str, dict[str, Any]], now: datetime) -> list[Record]:
    return [
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
    ]


def _upsert_orm(job: SyncJob, rows: list[Record], seq: int) -> int:
    """The portable upsert (SQLite in development). Returns how many rows existed before."""
    existing = Record.objects.filter(job=job, graph_id__in=[r.graph_id for r in rows]).count()
    for row in rows:
        row.feed_seq = seq
    Record.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["job", "graph_id"],
        update_fields=UPDATE_FIELDS,
    )
    return existing


# The same upsert as _upsert_orm, as one statement over column arrays. Why not bulk_create here:
# on a 50,000-message initial sync (bench/sync_throughput.py --profile) it took 72 % of the
# worker's time, mostly on the client: Django binds parameters client-side, so psycopg escapes
# every JSON document into an array literal with a Python regex, after 13 fields per record were
# prepared one by one and the documents serialised by json.dumps. Binary parameters need no
# escaping; orjson does the serialising. The run went from 2,500 to 7,000 records/s.
_UPSERT = """
    WITH written AS (
    INSERT INTO {table} (job_id, connection_id, tenant_id, resource, graph_id, change_key, title,
                         occurred_at, data, generation, deleted_at, created_at, updated_at,
                         feed_seq)
    SELECT %(job)s, %(connection)s, %(tenant)s, %(resource)s, item.graph_id, item.change_key,
           item.title, item.occurred_at, item.data::json, %(generation)s, NULL, %(now)s, %(now)s,
           %(seq)s
    FROM unnest(%(graph_ids)b::text[], %(change_keys)b::text[], %(titles)b::text[],
                %(dates)b::timestamptz[], %(documents)b::text[])
         AS item(graph_id, change_key, title, occurred_at, data)
    ON CONFLICT (job_id, graph_id) DO UPDATE SET
        change_key = EXCLUDED.change_key, title = EXCLUDED.title,
        occurred_at = EXCLUDED.occurred_at, data = EXCLUDED.data,
        generation = EXCLUDED.generation, deleted_at = NULL, updated_at = EXCLUDED.updated_at,
        feed_seq = EXCLUDED.feed_seq
    -- xmax is 0 on a freshly inserted row and set on one the conflict updated: counting it
    -- here saves a SELECT of every id before the write.
    RETURNING (xmax = 0) AS inserted
    )
    SELECT count(*) FILTER (WHERE NOT inserted) FROM written
"""


def _upsert_params(
    job: SyncJob, spec: Spec, live: dict[str, dict[str, Any]], now: datetime
) -> dict[str, Any]:
    return {
        "job": job.pk,
        "connection": job.connection_id,
        "tenant": job.tenant_id,
        "resource": job.resource,
        "generation": job.generation,
        "now": now,
        "graph_ids": list(live),
        "change_keys": [spec.change_key_of(item) for item in live.values()],
        "titles": [spec.title_of(item)[:500] for item in live.values()],
        "dates": [spec.date_of(item) for item in live.values()],
        "documents": [orjson.dumps(item).decode() for item in live.values()],
    }


def _upsert_postgresql(params: dict[str, Any], seq: int) -> int:
    """Returns how many rows existed before. Runs in the caller's transaction: the cursor is
    a plain psycopg one on Django's own connection, for server-side (binary) binding, which
    Django's cursors (client-side binding) do not do."""
    table = connection.ops.quote_name(Record._meta.db_table)
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_UPSERT.format(table=table), {**params, "seq": seq})
        (existing,) = cursor.fetchone()
    return existing
