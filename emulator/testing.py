"""Start the emulator as a subprocess for tests and benchmarks.

with running_emulator(scenario_dict_or_path) as emu:
    emu.login_url, emu.graph_url, emu.control
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.control import Control

DEMO_SCENARIO = Path(__file__).parent / "scenarios" / "demo.json"


class EmulatorStartError(RuntimeError):
    pass


@dataclass
class RunningEmulator:
    login_url: str
    graph_url: str
    control: Control
    process: subprocess.Popen[bytes]
    scenario: dict[str, Any]

    def authority(self, tenant: str = "common") -> str:
        return f"{self.login_url}/{tenant}"


def load_scenario(scenario: dict[str, Any] | str | Path | None) -> dict[str, Any]:
    if scenario is None:
        scenario = DEMO_SCENARIO
    if isinstance(scenario, dict):
        return scenario
    return json.loads(Path(scenario).read_text())


@contextlib.contextmanager
def running_emulator(
    scenario: dict[str, Any] | str | Path | None = None,
    timeout: float = 20.0,
    host: str = "127.0.0.1",
) -> Iterator[RunningEmulator]:
    spec = load_scenario(scenario)
    with tempfile.TemporaryDirectory(prefix="emulator-") as tmp:
        scenario_path = Path(tmp) / "scenario.json"
        scenario_path.write_text(json.dumps(spec))
        ready = Path(tmp) / "ready.json"
        log = open(Path(tmp) / "output.log", "w+b")  # noqa: SIM115 - read back on failure
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "emulator",
                "--scenario",
                str(scenario_path),
                "--login-port",
                "0",
                "--graph-port",
                "0",
                "--host",
                host,
                "--ready-file",
                str(ready),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            urls = _wait_ready(process, ready, log, timeout)
            yield RunningEmulator(
                urls["login"], urls["graph"], Control(urls["login"]), process, spec
            )
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


def _wait_ready(
    process: subprocess.Popen[bytes], ready: Path, log: Any, timeout: float
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists() and ready.stat().st_size:
            with contextlib.suppress(ValueError):
                return json.loads(ready.read_text())
        if process.poll() is not None:
            break
        time.sleep(0.02)
    log.seek(0)
    output = log.read().decode(errors="replace")
    state = f"exited with {process.returncode}" if process.poll() is not None else "still starting"
    raise EmulatorStartError(
        f"emulator not ready after {timeout:.0f}s ({state}); output:\n{output}"
    )
