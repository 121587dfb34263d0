"""The records changes feed: one consumer reading a big feed from its start.

python bench/records_feed.py [--records 1000000] [--page-size 1000]

Starts its own PostgreSQL (default durability) and Redis, fills one connection's mail feed with
N records of about 1 KB each (`INSERT ... SELECT generate_series`, message documents shaped like
Graph's, one in fifty a tombstone, stamped with the seqs an initial sync in pages of 1,000
leaves), then reads the whole feed from no cursor, page after page, through `graphsync.feed.page`
and `graphsync.feed.render`: what the API does for one consumer following `next_cursor`. Prints
records per second, and the queries and milliseconds of the first and the last pages, which must
not grow with the position in the feed. Target: 20,000 records/s at 1,000,000 records. Exits
non-zero when the consumer did not read every record exactly once.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import services, setup_django

TARGET = 20_000  # records/s for one consumer, at 1,000,000 records
SYNC_PAGE = 1000  # rows per seq, as an initial sync's pages stamp them
CHUNK = 100_000  # rows per INSERT, so progress shows
EDGE = 5  # pages at each end of the feed whose queries and times are shown

# A received message as Graph's delta returns it with Graphport's $select: about 1 KB of JSON
# (SQL for the INSERT below, with its % operators doubled for the parameters).
DOCUMENT = """json_build_object(
    '@odata.etag', 'W/"CQAAABYAAAB' || g || '"',
    'id', 'AAMkAGI2TG93AAA' || g,
    'createdDateTime', to_char(now() - g * interval '1 minute', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    'lastModifiedDateTime', to_char(now() - g * interval '1 minute', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    'changeKey', 'CQAAABYAAAB' || g,
    'categories', json_build_array(),
    'receivedDateTime', to_char(now() - g * interval '1 minute', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    'sentDateTime', to_char(now() - g * interval '1 minute', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    'hasAttachments', g %% 7 = 0,
    'internetMessageId', '<' || md5(g::text) || '@contoso.example>',
    'subject', 'Quarterly report ' || g,
    'bodyPreview', 'Hi team, please find attached the figures for the quarter. '
        || repeat('The numbers look good overall; a few regions need attention. ', 3),
    'importance', 'normal',
    'parentFolderId', 'AQMkAGI2TG93AAAuAAADInbox',
    'conversationId', 'AAQkAGI2TG93' || (g / 4),
    'isRead', g %% 3 = 0,
    'isDraft', false,
    'webLink', 'https://outlook.office365.com/owa/?ItemID=AAMkAGI2TG93AAA' || g
        || '&exvsurl=1&viewmodel=ReadMessageItem',
    'from', json_build_object('emailAddress', json_build_object(
        'name', 'Person ' || (g %% 500), 'address', 'person.' || (g %% 500) || '@contoso.example')),
    'toRecipients', json_build_array(json_build_object('emailAddress', json_build_object(
        'name', 'Adele Vance', 'address', 'adelev@contoso.example'))),
    'ccRecipients', json_build_array(),
    'flag', json_build_object('flagStatus', 'notFlagged')
)"""


@dataclass
class Reading:
    records: int = 0
    ids: set[int] = field(default_factory=set)
    pages: list[tuple[int, float]] = field(default_factory=list)  # (queries, ms) per page
    body_bytes: int = 0
    seconds: float = 0.0


def make_connection():
    from connections.models import Connection, EntraApp, Tenant
    from graphsync.models import Resource, SyncJob

    tenant = Tenant.objects.create(name="Bench feed")
    app = EntraApp.objects.create(
        tenant=tenant,
        name="Bench feed app",
        client_id=str(uuid.uuid4()),
        authority="organizations",
        delegated_scopes="User.Read Mail.Read",
    )
    connection = Connection.objects.create(
        app=app,
        ms_tenant_id="11111111-1111-1111-1111-111111111111",
        ms_object_id=str(uuid.uuid4()),
        display_name="Adele Vance",
        user_principal_name="adelev@contoso.example",
    )
    job = SyncJob.objects.create(
        connection=connection, tenant=tenant, resource=Resource.MAIL, folder="inbox"
    )
    return connection, job


def fill(job, records: int) -> None:
    """`records` rows in the job's feed, seqs as pages of SYNC_PAGE would have stamped them."""
    from django.db import connection as db

    from graphsync.models import RecordFeed

    sql = (
        "INSERT INTO graphsync_record (job_id, connection_id, tenant_id, resource, graph_id,"
        " change_key, title, occurred_at, data, generation, deleted_at, created_at, updated_at,"
        " feed_seq) SELECT %(job)s, %(connection)s, %(tenant)s, 'mail', 'AAMkAGI2TG93AAA' || g,"
        " 'CQAAABYAAAB' || g, 'Quarterly report ' || g, now() - g * interval '1 minute',"
        f" {DOCUMENT}, 1, CASE WHEN g %% 50 = 0 THEN now() END, now(), now(),"
        f" g / {SYNC_PAGE} + 1 FROM generate_series(%(first)s, %(last)s) AS g"
    )
    params = {"job": job.pk, "connection": job.connection_id, "tenant": job.tenant_id}
    for first in range(0, records, CHUNK):
        last = min(first + CHUNK, records) - 1
        with db.cursor() as cursor:
            cursor.execute(sql, {**params, "first": first, "last": last})
        print(f"  {last + 1:,} records", flush=True)
    RecordFeed.objects.create(
        connection_id=job.connection_id, resource="mail", last_seq=(records - 1) // SYNC_PAGE + 1
    )
    with db.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE graphsync_record")


def read_feed(connection, page_size: int) -> Reading:
    """Follow the feed from no cursor until it says there is no more, as one consumer."""
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    from graphsync import feed

    reading = Reading()
    cursor = None
    started = time.perf_counter()
    while True:
        page_started = time.perf_counter()
        with CaptureQueriesContext(db) as captured:
            found = feed.page(connection, "mail", cursor, page_size)
            body = feed.render(found)
        reading.pages.append(
            (len(captured.captured_queries), (time.perf_counter() - page_started) * 1000)
        )
        reading.records += len(found.records)
        reading.ids.update(row.id for row in found.records)
        reading.body_bytes += len(body)
        cursor = found.next_cursor
        if not found.has_more:
            break
    reading.seconds = time.perf_counter() - started
    return reading


def report(reading: Reading, records: int, page_size: int) -> bool:
    rate = reading.records / reading.seconds
    first, last = reading.pages[:EDGE], reading.pages[-EDGE:]
    complete = reading.records == records == len(reading.ids)
    met = rate >= TARGET
    print(f"\nRecords feed: {records:,} records, one consumer, pages of {page_size:,}\n")
    print(f"pages read:             {len(reading.pages):,}")
    print(f"records read:           {reading.records:,} ({len(reading.ids):,} distinct)")
    print(f"bytes rendered:         {reading.body_bytes / 1024 / 1024:,.0f} MB")
    print(f"seconds:                {reading.seconds:.1f}")
    print(f"records/s:              {rate:,.0f} (target >= {TARGET:,}: {'met' if met else 'NO'})")
    print(
        f"queries per page:       first {first[0][0]}, last {last[-1][0]}, max "
        f"{max(q for q, _ in reading.pages)}"
    )
    print(f"ms per page, first {len(first)}: {', '.join(f'{ms:.1f}' for _, ms in first)}")
    print(f"ms per page, last {len(last)}:  {', '.join(f'{ms:.1f}' for _, ms in last)}")
    print(f"ms per page, median:    {statistics.median(ms for _, ms in reading.pages):.1f}")
    print(f"records read: {'all, each once' if complete else 'INCOMPLETE'}")
    return complete


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    with services() as env:
        setup_django(env)
        connection, job = make_connection()
        print(f"writing {args.records:,} records ...", flush=True)
        started = time.perf_counter()
        fill(job, args.records)
        print(f"  written in {time.perf_counter() - started:.0f} s", flush=True)
        print("reading the feed ...", flush=True)
        reading = read_feed(connection, args.page_size)
        ok = report(reading, args.records, args.page_size)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
