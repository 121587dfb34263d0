"""`python -m emulator --scenario demo.json --login-port 0 --graph-port 0`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

from emulator import persistence, server
from emulator.runtime import Emulator

DEMO = Path(__file__).parent / "scenarios" / "demo.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m emulator",
        description="Local Microsoft identity platform + Microsoft Graph emulator.",
    )
    parser.add_argument("--scenario", type=Path, default=DEMO, help="scenario JSON file")
    parser.add_argument("--login-port", type=int, default=5010, help="0 picks a free port")
    parser.add_argument("--graph-port", type=int, default=5011, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ready-file", type=Path, help="write the two base URLs here as JSON")
    parser.add_argument(
        "--state-file",
        type=Path,
        help="keep grants and tokens here across restarts (loaded at start, saved every "
        "30 s and at exit)",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    spec = json.loads(args.scenario.read_text())
    emu = Emulator(spec)
    if args.state_file and persistence.load(emu, args.state_file):
        print(f"emulator: grants and tokens restored from {args.state_file}", flush=True)
    runners, login, graph = await server.start(emu, args.host, args.login_port, args.graph_port)
    if args.ready_file:
        args.ready_file.write_text(json.dumps({"login": login, "graph": graph}))
    print(f"emulator ready login={login} graph={graph}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=30)
        if args.state_file:
            persistence.save(emu, args.state_file)
    for runner in runners:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"emulator: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
