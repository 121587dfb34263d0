"""What a Python team would otherwise write, each run in a process of its own and printing one
JSON line (records, seconds, peak memory, error):

  fetch    a plain `requests` loop over the delta pages Graphport reads, parsed with orjson, no
           database: the limit;
  msgraph  the official `msgraph-sdk`: the same delta request through its request builders, then
           its `PageIterator`, with its default middleware (the retry handler included);
  o365     the `O365` library: `mailbox.inbox_folder().get_messages(limit=None, batch=N)` with
           the same `$select`, its default connection settings.

With `--save`, msgraph and o365 store each message the way a typical integration does: one
`update_or_create` through the Django ORM per message, into a bench-only table (`bench_message`,
created by `create_table`, never part of the portal's migrations).

python bench/rivals.py {fetch,msgraph,o365} --graph-url URL --token TOKEN --page-size N [--save]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The $select Graphport's mail job sends (graphsync.resources.MESSAGE_FIELDS): every contender
# asks for the same fields. Copied rather than imported so this process needs no Django unless
# it saves.
MESSAGE_FIELDS = (
    "id,changeKey,createdDateTime,lastModifiedDateTime,receivedDateTime,sentDateTime,subject,"
    "bodyPreview,body,from,sender,toRecipients,ccRecipients,conversationId,internetMessageId,"
    "parentFolderId,isRead,isDraft,hasAttachments,importance,categories,webLink"
)

_model = None


def message_model():
    """The table a typical integration keeps: a few columns per message, keyed by Graph id."""
    global _model
    if _model is None:
        from django.db import models

        class BenchMessage(models.Model):
            graph_id = models.CharField(max_length=512, unique=True)
            change_key = models.CharField(max_length=256, blank=True)
            subject = models.TextField(blank=True)
            sender = models.CharField(max_length=320, blank=True)
            received_at = models.DateTimeField(null=True)
            is_read = models.BooleanField(default=False)
            body_preview = models.TextField(blank=True)
            body = models.TextField(blank=True)

            class Meta:
                app_label = "bench"
                db_table = "bench_message"

            def __str__(self) -> str:
                return self.subject

        _model = BenchMessage
    return _model


def create_table() -> None:
    from django.db import connection

    model = message_model()
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_message")
    with connection.schema_editor() as editor:
        editor.create_model(model)


def clear_table() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM bench_message")
        (count,) = cursor.fetchone()
        cursor.execute("TRUNCATE bench_message")
    return count


# --- the contenders -----------------------------------------------------------------------------


def delta_url(graph_url: str) -> str:
    return f"{graph_url}/v1.0/me/mailFolders/inbox/messages/delta?$select={MESSAGE_FIELDS}"


def run_fetch(args) -> dict[str, Any]:
    http = requests.Session()
    http.headers.update(
        {
            "Authorization": f"Bearer {args.token}",
            "Accept": "application/json",
            "Prefer": f"odata.maxpagesize={args.page_size}",
        }
    )
    url: str | None = delta_url(args.graph_url)
    records = 0
    while url:
        response = http.get(url, timeout=60)
        response.raise_for_status()
        body = orjson.loads(response.content)
        records += len(body["value"])
        url = body.get("@odata.nextLink")
    return {"records": records}


class StaticTokenProvider:
    """An `AccessTokenProvider` handing kiota the token the emulator issued through the portal's
    connect flow (azure-identity's credentials would ask login.microsoftonline.com)."""

    def __init__(self, token: str, host: str):
        from kiota_abstractions.authentication import AllowedHostsValidator

        self.token = token
        self.validator = AllowedHostsValidator([host])

    async def get_authorization_token(self, uri: str, additional_authentication_context=None):
        return self.token

    def get_allowed_hosts_validator(self):
        return self.validator


def run_msgraph(args) -> dict[str, Any]:
    from urllib.parse import urlsplit

    from kiota_abstractions.authentication import BaseBearerTokenAuthenticationProvider
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.users.item.mail_folders.item.messages.delta.delta_request_builder import (  # noqa: E501
        DeltaRequestBuilder,
    )
    from msgraph_core.tasks.page_iterator import PageIterator

    provider = StaticTokenProvider(args.token, urlsplit(args.graph_url).netloc.split(":")[0])
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(provider))
    adapter.base_url = f"{args.graph_url}/v1.0"
    client = GraphServiceClient(request_adapter=adapter)
    prefer = {"Prefer": f"odata.maxpagesize={args.page_size}"}
    config = RequestConfiguration(
        query_parameters=DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
            select=MESSAGE_FIELDS.split(",")
        )
    )
    config.headers.add_all(prefer)
    if args.save:
        # The iterator calls its callback inside the event loop, where Django refuses the
        # (synchronous) ORM; a callback cannot await sync_to_async. What integrations do is to
        # allow it: the saves then run inline, the fastest the SDK can go.
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    save = saver_msgraph() if args.save else None
    seen: set[str] = set()
    error = ""

    def each(message) -> bool:
        seen.add(message.id)
        if save:
            save(message)
        return True

    async def iterate() -> None:
        first = await client.me.mail_folders.by_mail_folder_id("inbox").messages.delta.get(
            request_configuration=config
        )
        pages = PageIterator(first, adapter)
        # PageIterator.set_headers calls add_all(**headers), which takes a dict: it raises.
        pages.headers.add_all(prefer)
        await pages.iterate(each)

    try:
        asyncio.run(iterate())
    except Exception as exc:  # what the caller of an integration would see: it gave up
        error = f"{type(exc).__name__}: {getattr(exc, 'response_status_code', '')} {exc}"[:300]
    return {"records": len(seen), "error": error}


def saver_msgraph():
    model = message_model()

    def save(message) -> None:
        sender = message.from_.email_address.address if message.from_ else ""
        model.objects.update_or_create(
            graph_id=message.id,
            defaults={
                "change_key": message.change_key or "",
                "subject": message.subject or "",
                "sender": sender or "",
                "received_at": message.received_date_time,
                "is_read": bool(message.is_read),
                "body_preview": message.body_preview or "",
                "body": (message.body.content if message.body else "") or "",
            },
        )

    return save


def run_o365(args) -> dict[str, Any]:
    from O365 import Account
    from O365.connection import MSGraphProtocol

    class EmulatorProtocol(MSGraphProtocol):
        _protocol_url = f"{args.graph_url}/"

    account = Account(
        ("bench-client", "unused"),
        protocol=EmulatorProtocol(default_resource="me"),
    )
    # The token the emulator issued; O365's own session (its retry adapter included) carries it.
    account.con.session = account.con.get_session()
    account.con.update_session_auth_header(access_token=args.token)
    inbox = account.mailbox().inbox_folder()
    query = inbox.new_query().select(*MESSAGE_FIELDS.split(","))
    model = message_model() if args.save else None
    seen: set[str] = set()
    for message in inbox.get_messages(limit=None, batch=args.page_size, query=query):
        seen.add(message.object_id)
        if model is not None:
            model.objects.update_or_create(
                graph_id=message.object_id,
                defaults={
                    # O365's Message does not keep changeKey: the column stays empty.
                    "subject": message.subject or "",
                    "sender": (message.sender.address if message.sender else "") or "",
                    "received_at": message.received,
                    "is_read": bool(message.is_read),
                    "body_preview": message.body_preview or "",
                    "body": message.body or "",
                },
            )
    return {"records": len(seen)}


CONTENDERS = {"fetch": run_fetch, "msgraph": run_msgraph, "o365": run_o365}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("contender", choices=sorted(CONTENDERS))
    parser.add_argument("--graph-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    if args.save:
        import django

        django.setup()
    started = time.perf_counter()
    figures = CONTENDERS[args.contender](args)
    figures["seconds"] = time.perf_counter() - started
    # VmHWM, the peak resident set of this program (ru_maxrss would count the parent's pages
    # from before the exec).
    status = Path("/proc/self/status").read_text().splitlines()
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    figures["peak_mb"] = peak_kb / 1024
    figures["pid"] = os.getpid()
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
