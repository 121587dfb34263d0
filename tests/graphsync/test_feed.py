"""The records changes feed: every record's latest state and every deletion, in change order,
also while syncs commit; signed cursors; one query per page."""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta

import orjson
import pytest
from django.core import signing
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from graphsync import feed, resources, store
from graphsync.models import Record, Resource, SyncJob

pytestmark = pytest.mark.django_db(transaction=True)
MAIL = resources.spec(Resource.MAIL)


def job_of(world, folder="inbox", resource=Resource.MAIL):
    return SyncJob.objects.create(
        connection=world.connection, tenant=world.tenant, resource=resource, folder=folder
    )


def message(graph_id, subject="Hello"):
    return {"id": graph_id, "subject": subject}


def removal(graph_id):
    return {"id": graph_id, "@removed": {"reason": "deleted"}}


def write(job, *items, now=None):
    return store.apply_page(job, MAIL, list(items), now or timezone.now())


def read(connection_, cursor=None, limit=100, resource=Resource.MAIL, **options):
    """One page as the API sends it."""
    found = feed.page(connection_, resource, cursor, limit, **options)
    return orjson.loads(feed.render(found))


def follow(connection_, cursor=None, limit=3, resource=Resource.MAIL):
    """Every record the feed hands out after `cursor` until it has no more, and the cursor to
    keep polling with."""
    seen = []
    while True:
        body = read(connection_, cursor, limit, resource)
        seen += body["records"]
        cursor = body["next_cursor"]
        if not body["has_more"]:
            return seen, cursor


def ids(records):
    return [r["graph_id"] for r in records]


# --- order -------------------------------------------------------------------------------------


def test_following_the_feed_returns_every_record_in_change_order(acme):
    inbox, sent = job_of(acme, "inbox"), job_of(acme, "sentitems")
    write(inbox, *(message(f"m{n}", f"Subject {n}") for n in range(5)))
    write(sent, message("s1"), message("s2"))

    records, _ = follow(acme.connection)

    assert ids(records) == ["m0", "m1", "m2", "m3", "m4", "s1", "s2"]
    first = records[0]
    row = Record.objects.get(job=inbox, graph_id="m0")
    assert first == {
        "id": row.pk,
        "graph_id": "m0",
        "job": inbox.pk,
        "resource": "mail",
        "deleted": False,
        "first_seen_at": row.created_at.isoformat().replace("+00:00", "Z"),
        "last_changed_at": row.updated_at.isoformat().replace("+00:00", "Z"),
        "data": {"id": "m0", "subject": "Subject 0"},
    }
    assert {r["job"] for r in records[5:]} == {sent.pk}


def test_a_change_moves_the_record_to_the_end_and_a_deletion_comes_as_a_tombstone(acme):
    job = job_of(acme)
    write(job, *(message(f"m{n}") for n in range(5)))
    _, cursor = follow(acme.connection)

    write(job, message("m1", "Changed"), removal("m3"))
    changes, cursor = follow(acme.connection, cursor)

    assert [(r["graph_id"], r["deleted"], r["data"]["subject"]) for r in changes] == [
        ("m1", False, "Changed"),
        ("m3", True, "Hello"),  # the tombstone keeps the last document
    ]
    again, _ = follow(acme.connection)
    assert ids(again) == ["m0", "m2", "m4", "m1", "m3"]


def test_with_nothing_new_the_next_cursor_stays_where_it_is(acme):
    job = job_of(acme)
    empty = read(acme.connection)
    assert empty["records"] == [] and not empty["has_more"]
    write(job, message("m0"))
    _, cursor = follow(acme.connection, empty["next_cursor"])

    quiet = read(acme.connection, cursor)

    assert quiet == {"records": [], "next_cursor": cursor, "has_more": False}
    write(job, message("m1"))
    assert ids(read(acme.connection, cursor)["records"]) == ["m1"]


def test_a_full_resync_brings_its_deletions_into_the_feed(acme):
    job = job_of(acme)
    write(job, message("a"), message("b"), message("c"))
    _, cursor = follow(acme.connection)

    job.generation += 1  # a resync round: what it does not see again is gone
    job.save(update_fields=["generation"])
    write(job, message("b", "Still here"))
    store.finish_resync(job, timezone.now())

    changes, _ = follow(acme.connection, cursor)
    assert sorted((r["graph_id"], r["deleted"]) for r in changes) == [
        ("a", True),
        ("b", False),
        ("c", True),
    ]
    assert changes[0]["graph_id"] == "b"  # the page committed before the resync ended


def test_a_feed_holds_one_connection_and_one_resource(acme, globex):
    write(job_of(acme), message("acme-mail"))
    store.apply_page(
        job_of(acme, resource=Resource.CONTACTS),
        resources.spec(Resource.CONTACTS),
        [{"id": "acme-contact", "displayName": "Megan"}],
        timezone.now(),
    )
    write(job_of(globex), message("globex-mail"))

    assert ids(follow(acme.connection)[0]) == ["acme-mail"]
    assert ids(follow(acme.connection, resource=Resource.CONTACTS)[0]) == ["acme-contact"]
    assert ids(follow(globex.connection)[0]) == ["globex-mail"]


def test_modified_after_leaves_out_earlier_changes(acme):
    job = job_of(acme)
    earlier = timezone.now() - timedelta(hours=1)
    write(job, message("old"), now=earlier)
    write(job, message("new"))

    assert ids(read(acme.connection, modified_after=earlier)["records"]) == ["new"]
    assert ids(read(acme.connection)["records"]) == ["old", "new"]


# --- while syncs write -------------------------------------------------------------------------

WRITERS_PER_JOB = 2
ROUNDS = 20
POOL = [f"msg-{n}" for n in range(60)]


def test_a_reader_following_the_feed_while_syncs_commit_ends_with_the_database_state(acme):
    """Writers of three mail folders of one connection insert, update and delete while a reader
    follows the feed in small pages. Each writer takes its time stamp before its transaction
    and dawdles before and inside it, so commits come out of the order of their timestamps and
    updates land on rows the reader has passed; a reader ordering by id or by time loses
    changes here. Once the writers are done the reader drains the feed: what it holds must be
    the database's state."""
    jobs = [job_of(acme, folder) for folder in ("inbox", "sentitems", "archive")]
    start = threading.Barrier(len(jobs) * WRITERS_PER_JOB)
    writers_done = threading.Event()
    errors: list[BaseException] = []
    seen: dict[tuple[int, str], tuple[dict, bool]] = {}
    pages_while_writing = 0

    def writer(job, seed):
        rng = random.Random(seed)
        try:
            start.wait()  # all at once: they race to create the feed's counter too
            for n in range(ROUNDS):
                now = timezone.now()
                items = [
                    removal(gid) if rng.random() < 0.25 else message(gid, f"{seed}/{n}")
                    for gid in rng.sample(POOL, 5)
                ]
                time.sleep(rng.uniform(0, 0.02))  # fetching and preparing the page
                with transaction.atomic():
                    store.apply_page(job, MAIL, items, now)
                    time.sleep(rng.uniform(0, 0.01))  # the rest of the page's transaction
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def reader():
        nonlocal pages_while_writing
        cursor = None
        try:
            while True:
                # Looked at before the page is read: a page read after the writers ended
                # sees all they committed.
                drained = writers_done.is_set()
                body = read(acme.connection, cursor, limit=4)
                for r in body["records"]:
                    seen[(r["job"], r["graph_id"])] = (r["data"], r["deleted"])
                cursor = body["next_cursor"]
                if drained and not body["has_more"]:
                    return
                if not drained:
                    pages_while_writing += 1
                    time.sleep(0.001)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    writers = [
        threading.Thread(target=writer, args=(job, job.pk * 10 + k))
        for job in jobs
        for k in range(WRITERS_PER_JOB)
    ]
    following = threading.Thread(target=reader)
    following.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    writers_done.set()
    following.join(60)

    assert not following.is_alive() and not errors, errors
    stored = {
        (row.job_id, row.graph_id): (row.data, row.deleted_at is not None)
        for row in Record.objects.filter(connection=acme.connection, resource=Resource.MAIL)
    }
    assert seen == stored
    assert any(deleted for _, deleted in stored.values())
    assert pages_while_writing > 20  # the reader did read while the writers wrote


def test_rows_written_together_share_one_seq_and_each_transaction_takes_the_next(acme):
    inbox, sent = job_of(acme, "inbox"), job_of(acme, "sentitems")
    write(inbox, message("a"), message("b"))
    with transaction.atomic():
        write(inbox, message("a", "Changed"), removal("b"))
        write(sent, message("c"))
    seqs = dict(Record.objects.values_list("graph_id", "feed_seq"))
    assert seqs["a"] == seqs["b"] > 0
    assert seqs["c"] == seqs["a"] + 1


# --- cursors and limits ------------------------------------------------------------------------


def test_a_cursor_graphport_did_not_issue_is_refused(acme):
    write(job_of(acme), message("m0"))
    good = read(acme.connection)["next_cursor"]
    payload, signature = good.rsplit(":", 1)
    tampered = f"{payload}:{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    foreign = signing.dumps([acme.connection.pk, "mail", 0, 0], salt="another.purpose")

    for bad in ("garbage", "a:b", tampered, foreign, good[::-1]):
        with pytest.raises(feed.BadCursor, match=r"^cursor: not a cursor Graphport issued$"):
            feed.page(acme.connection, Resource.MAIL, bad, 10)
    assert issubclass(feed.BadCursor, ValueError)


def test_a_cursor_of_another_connection_or_resource_is_refused(acme, globex):
    write(job_of(acme), message("m0"))
    write(job_of(globex), message("g0"))
    acme_mail = read(acme.connection)["next_cursor"]
    globex_mail = read(globex.connection)["next_cursor"]

    for connection_, resource, cursor in [
        (acme.connection, Resource.MAIL, globex_mail),
        (globex.connection, Resource.MAIL, acme_mail),
        (acme.connection, Resource.CONTACTS, acme_mail),
    ]:
        with pytest.raises(
            feed.BadCursor, match=r"^cursor: belongs to another connection or resource$"
        ):
            feed.page(connection_, resource, cursor, 10)


def test_a_limit_outside_one_to_the_maximum_is_refused(acme):
    write(job_of(acme), message("m0"))
    for limit in (0, -1, feed.MAX_LIMIT + 1):
        with pytest.raises(ValueError, match="limit"):
            feed.page(acme.connection, Resource.MAIL, None, limit)
    assert len(feed.page(acme.connection, Resource.MAIL, None, feed.MAX_LIMIT).records) == 1


# --- cost --------------------------------------------------------------------------------------


def test_each_page_is_one_query_wherever_it_starts(acme):
    job = job_of(acme)
    for n in range(6):
        write(job, *(message(f"m{n}-{k}") for k in range(10)))
    write(job, *(removal(f"m0-{k}") for k in range(5)))

    queries, cursor = [], None
    while True:
        with CaptureQueriesContext(connection) as captured:
            found = feed.page(acme.connection, Resource.MAIL, cursor, 7)
            feed.render(found)
        queries.append(len(captured.captured_queries))
        cursor = found.next_cursor
        if not found.has_more:
            break
    with CaptureQueriesContext(connection) as captured:  # polling with nothing new
        feed.render(feed.page(acme.connection, Resource.MAIL, cursor, 7))
    queries.append(len(captured.captured_queries))

    assert len(queries) > 8
    assert set(queries) == {1}
