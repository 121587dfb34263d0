"""The test command: `python -m tests.run [pytest arguments]` (what `make test` runs).

Starts PostgreSQL and Redis of its own unless DATABASE_URL / REDIS_URL point at reachable
servers, then checks migrations, lint and formatting, and runs pytest on PostgreSQL. The servers
are stopped at the end, whatever happened.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.localservices import LocalPostgres, LocalRedis, reachable  # noqa: E402


def step(title: str, command: list[str], env: dict[str, str]) -> int:
    print(f"\n=== {title}: {' '.join(command)}", flush=True)
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


def main(pytest_args: list[str]) -> int:
    # --skip-checks: pytest only, for a quick loop while working on one area.
    skip_checks = "--skip-checks" in pytest_args
    pytest_args = [arg for arg in pytest_args if arg != "--skip-checks"]
    env = dict(os.environ)
    env.update(
        ENV_FILE=os.devnull,
        DEBUG="false",
        # Pages link static files by their own names: tests run nothing through collectstatic
        # but tests/portal/test_production.py, which serves the collected files itself.
        STATIC_MANIFEST="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        MICROSOFT_ALLOW_HTTP="true",
        MICROSOFT_ALLOW_INTERNAL_HOSTS="true",
        PYTHONUNBUFFERED="1",
    )
    started = []
    workdir = Path(tempfile.mkdtemp(prefix="graphport-test-"))
    workdir.chmod(0o755)  # PostgreSQL runs as its own user and must reach its directory
    try:
        if not (
            env.get("DATABASE_URL", "").startswith("postgres")
            and reachable(env["DATABASE_URL"], 5432)
        ):
            postgres = LocalPostgres(workdir / "postgres").start()
            started.append(postgres)
            env["DATABASE_URL"] = postgres.url
            print(f"PostgreSQL started on {postgres.url}", flush=True)
        if not (env.get("REDIS_URL") and reachable(env["REDIS_URL"], 6379)):
            redis = LocalRedis(workdir / "redis").start()
            started.append(redis)
            env["REDIS_URL"] = redis.url
            print(f"Redis started on {redis.url}", flush=True)
        python = sys.executable
        checks = [
            ("migrations", [python, "manage.py", "makemigrations", "--check", "--dry-run"]),
            ("lint", [python, "-m", "ruff", "check", "."]),
            ("format", [python, "-m", "ruff", "format", "--check", "."]),
        ]
        if skip_checks:
            checks = []
        failed = [title for title, command in checks if step(title, command, env) != 0]
        code = step("tests", [python, "-m", "pytest", *pytest_args], env)
        if failed:
            print(f"\nFailed checks: {', '.join(failed)}", flush=True)
            return code or 1
        return code
    finally:
        for service in reversed(started):
            service.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
