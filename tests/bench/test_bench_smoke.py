"""The benchmarks still run: `bench/sync_throughput.py --quick` end to end, figures unchecked."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_sync_throughput_quick_prints_its_table():
    # The bench starts its own PostgreSQL, Redis, emulator and worker; it must not inherit the
    # test run's database settings.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "sync_throughput.py"), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "graphport rec/s" in result.stdout and "fetch-only rec/s" in result.stdout, output
    assert "records stored: all" in result.stdout, output
