"""Benchmark 1: initial sync of one mailbox into PostgreSQL, Graphport against what a Python team
would otherwise write, side by side on the same emulator, pages and database.

  fetch-only   `requests` + orjson over the same delta pages, no database: the limit
  Graphport    `graphsync.tasks.run_job` on a fresh Celery worker (solo pool), enqueue to result
  msgraph-sdk  its request builders and `PageIterator`, `update_or_create` per message
  O365         `get_messages(limit=None, batch=N)`, `update_or_create` per message

Every contender but Graphport runs in a process of its own (bench/rivals.py); peak memory is
each process's peak resident set (VmHWM / ru_maxrss), Graphport's that of its worker.
"""

from __future__ import annotations

from pathlib import Path

from bench import rivals
from bench.common import ROOT, Row, connect_inbox_job, make_app, run_json, scenario
from bench.sync_throughput import sync_with_worker
from emulator.testing import running_emulator

FULL = {"messages": 50_000, "page_size": 1000}
QUICK = {"messages": 300, "page_size": 100}
TARGET_OF_LIMIT = 0.7
TARGET_OVER_O365 = 20.0


def run(env: dict[str, str], quick: bool, options: dict) -> list[Row]:
    size = options.get("messages") or (QUICK if quick else FULL)["messages"]
    page_size = (QUICK if quick else FULL)["page_size"]
    upn = f"sync.{size}@contoso.example"
    from graphsync.models import Record

    with running_emulator(scenario({upn: size})) as emu:
        app = make_app(emu, "Bench sync")
        job = connect_inbox_job(emu, app, upn, page_size)
        token = job.connection.access_token
        rivals.create_table()
        figures: dict[str, dict] = {}

        def rival(name: str, save: bool) -> dict:
            print(f"  {name}{' + ORM saves' if save else ''} ...", flush=True)
            args = [str(ROOT / "bench" / "rivals.py"), name, "--graph-url", emu.graph_url]
            args += ["--token", token, "--page-size", str(page_size)]
            result = run_json(env, *([*args, "--save"] if save else args))
            result["stored"] = rivals.clear_table() if save else result["records"]
            result["rate"] = result["records"] / result["seconds"]
            print(f"    {result['rate']:,.0f} rec/s, {result['seconds']:.1f} s", flush=True)
            return result

        figures["fetch"] = rival("fetch", save=False)
        print("  Graphport ...", flush=True)
        seconds, _, peak_mb, cpu = sync_with_worker(
            env, emu, job, Path(env["_BENCH_WORKDIR"]) / "sync-worker.log"
        )
        stored = Record.objects.filter(job=job, deleted_at__isnull=True).count()
        figures["graphport"] = {
            "records": size,
            "seconds": seconds,
            "rate": size / seconds,
            "peak_mb": peak_mb,
            "stored": stored,
            "cpu": cpu,
        }
        print(f"    {size / seconds:,.0f} rec/s, {seconds:.1f} s", flush=True)
        figures["o365"] = rival("o365", save=True)
        figures["msgraph"] = rival("msgraph", save=True)

    detail(figures, size, page_size)
    return rows(figures, size)


def detail(figures: dict[str, dict], size: int, page_size: int) -> None:
    print(
        f"\n1. Initial sync of one inbox of {size:,} messages, pages of {page_size:,}, into "
        "PostgreSQL (durable)\n"
    )
    head = f"{'contender':<34} {'rec/s':>9} {'seconds':>8} {'peak MB':>8} {'stored':>8}  error"
    print(head)
    print("-" * len(head))
    names = {
        "fetch": "fetch-only (requests, no DB)",
        "graphport": "Graphport (Celery worker)",
        "o365": "O365 + update_or_create",
        "msgraph": "msgraph-sdk + update_or_create",
    }
    for key, name in names.items():
        f = figures[key]
        print(
            f"{name:<34} {f['rate']:>9,.0f} {f['seconds']:>8.1f} {f['peak_mb']:>8.1f} "
            f"{f['stored']:>8,}  {f.get('error', '')}"
        )
    cpu = figures["graphport"]["cpu"]
    print(
        f"Graphport CPU s: worker {cpu['worker']:.1f}, PostgreSQL {cpu['postgres']:.1f}, "
        f"emulator {cpu['emulator']:.1f}"
    )


def rows(figures: dict[str, dict], size: int) -> list[Row]:
    g = figures["graphport"]
    out = []
    for key, name, target in (
        ("fetch", "fetch-only", TARGET_OF_LIMIT),
        ("o365", "O365+ORM", TARGET_OVER_O365),
        ("msgraph", "msgraph-sdk+ORM", None),
    ):
        f = figures[key]
        ratio = g["rate"] / max(f["rate"], 1e-9)
        out.append(
            Row(
                "1 initial sync",
                f"rec/s vs {name}",
                f"{g['rate']:,.0f}",
                f"{f['rate']:,.0f}",
                f"{ratio:.2f}x",
                f">= {target:g}x" if target else "",
                ratio >= target if target else None,
            )
        )
    out.append(
        Row(
            "1 initial sync",
            "peak MB vs msgraph-sdk / O365",
            f"{g['peak_mb']:.0f}",
            f"{figures['msgraph']['peak_mb']:.0f} / {figures['o365']['peak_mb']:.0f}",
        )
    )
    out.append(
        Row(
            "1 initial sync",
            "records stored (G / msgraph / O365)",
            f"{g['stored']:,}",
            f"{figures['msgraph']['stored']:,} / {figures['o365']['stored']:,}",
            target=f"{size:,}",
            met=g["stored"] == size,
        )
    )
    return out
