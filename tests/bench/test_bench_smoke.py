"""The benchmarks still run end to end in their smoke mode; figures are never checked.

`make test` installs the `bench` extra (msgraph-sdk, O365), so a missing package fails here
rather than being skipped."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

# The benches start their own PostgreSQL, Redis, emulator and workers; they must not inherit
# the test run's database settings.
ENV = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}


def _run(*args: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_rival_libraries_are_installed():
    import msgraph  # noqa: F401
    import O365  # noqa: F401


def test_bench_run_quick_prints_one_table_of_every_benchmark():
    result = _run(str(ROOT / "bench" / "run.py"), "--quick", timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "| benchmark" in result.stdout and "| graphport" in result.stdout, output
    for benchmark in ("1 initial sync", "2 throttled sync", "3 refresh fleet", "4 pages"):
        assert f"| {benchmark}" in result.stdout, output
    assert "FAILED to run" not in result.stdout, output
    assert "msgraph-sdk + update_or_create" in result.stdout, output
    assert "O365 + update_or_create" in result.stdout, output


def test_sync_throughput_quick_prints_its_table():
    result = _run(str(ROOT / "bench" / "sync_throughput.py"), "--quick", timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "graphport rec/s" in result.stdout and "fetch-only rec/s" in result.stdout, output
    assert "records stored: all" in result.stdout, output


def test_records_feed_reads_a_small_feed_whole():
    result = _run(str(ROOT / "bench" / "records_feed.py"), "--records", "5000", timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "records/s:" in result.stdout and "queries per page:" in result.stdout, output
    assert "records read: all, each once" in result.stdout, output
