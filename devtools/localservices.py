"""Start PostgreSQL and Redis servers of our own, on loopback, for the run and test commands.

Used only by the development commands (`manage.py runportal`, `python -m tests.run`), never by
the portal in production. Each server gets its own data directory and a free port, and is
stopped when the command ends.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"{what} exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ServiceError(f"{what} did not listen on port {port} within {timeout:g} s")


def _as_postgres_user() -> list[str]:
    # PostgreSQL refuses to run as root; as root, run its programs as the `postgres` user.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def postgres_bin(program: str) -> str:
    found = shutil.which(program)
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), reverse=True)
    if candidates:
        return candidates[0]
    if found:
        return found
    raise ServiceError(f"{program} not found: install PostgreSQL (apt-get install postgresql)")


class LocalRedis:
    def __init__(self, directory: Path, port: int | None = None):
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> LocalRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server not found: install it (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=(self.directory / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, self.process, "redis-server")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


class LocalPostgres:
    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        database: str = "graphport",
        durable: bool = False,
    ):
        self.directory = directory
        self.durable = durable
        self.port = port or free_port()
        self.database = database
        self.started = False

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*_as_postgres_user(), *args], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ServiceError(f"{' '.join(args[:2])} failed:\n{result.stdout}{result.stderr}")

    def start(self) -> LocalPostgres:
        data = self.directory / "data"
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        if not (data / "PG_VERSION").exists():
            self._run(
                postgres_bin("initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            )
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory}"
        if not self.durable:
            # Test databases are thrown away: skip the flushes. Benchmarks keep the defaults.
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            postgres_bin("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.directory / "postgres.log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )
        self.started = True
        # Already there when the data directory is reused: the error is expected then.
        subprocess.run(
            [
                *_as_postgres_user(),
                postgres_bin("createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                self.database,
            ],
            capture_output=True,
            check=False,
        )
        return self

    def stop(self) -> None:
        if self.started:
            subprocess.run(
                [
                    *_as_postgres_user(),
                    postgres_bin("pg_ctl"),
                    "-D",
                    str(self.directory / "data"),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ],
                capture_output=True,
                check=False,
            )
            self.started = False
