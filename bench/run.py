"""Every benchmark against the emulator, one table.

python bench/run.py [--quick] [--only sync,throttled,fleet,pages,load] [--throttle-window 15]

Starts its own PostgreSQL (default durability), Redis and, per benchmark, the emulator; prints
each benchmark's detail as it ends, then one table of Graphport's figures against the
comparisons, with the targets of the issue. `--quick` is the smoke mode of the test command:
tiny sizes, figures not meaningful. Exits non-zero when a benchmark fails to run or Graphport
loses data; a missed speed target is reported, not an error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Row, services, setup_django

BENCHMARKS = ("sync", "throttled", "fleet", "pages", "load")
COLUMNS = ("benchmark", "figure", "graphport", "comparison", "ratio", "target", "met")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def table(rows: list[Row]) -> str:
    cells = [COLUMNS] + [
        (
            r.benchmark,
            r.figure,
            r.graphport,
            r.comparison,
            r.ratio,
            r.target,
            "" if r.met is None else ("yes" if r.met else "NO"),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    parser.add_argument(
        "--throttle-window",
        type=float,
        help="throttled sync: the budget's window in seconds (default 15; smaller is faster, "
        "and says so in the output)",
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    options = {"throttle_window": args.throttle_window}
    rows: list[Row] = []
    failed: list[str] = []
    started = time.perf_counter()
    with services() as env:
        setup_django(env)
        for name in chosen:
            print(f"\n== {name} ==", flush=True)
            module = importlib.import_module(f"bench.{name}")
            try:
                rows += module.run(env, args.quick, options)
            except Exception:
                traceback.print_exc()
                failed.append(name)
                rows.append(Row(name, "FAILED to run (see above)", "", met=False))
    print(f"\nGraphport benchmarks{' (--quick: figures not meaningful)' if args.quick else ''}")
    print(f"machine: {machine()}")
    print(f"command: python bench/run.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"took {time.perf_counter() - started:.0f} s\n")
    print(table(rows))
    # Data Graphport lost, or a benchmark that did not run, fails the command; a missed speed
    # target does not (the table says NO).
    lost = [r for r in rows if r.figure.startswith("records stored") and r.met is False]
    return 1 if failed or lost else 0


if __name__ == "__main__":
    sys.exit(main())
