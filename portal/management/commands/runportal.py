"""Run the whole portal for development: Redis, a Celery worker, beat and the web server.

`make run` calls this. Data stays in the database (SQLite by default) and in `var/` between
runs. Ctrl-C stops everything this command started.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from portal.localservices import LocalRedis, reachable


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Run Redis, a Celery worker, Celery beat and the web server together."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, port: int, **options):
        # `kill` (SIGTERM) stops everything too, like Ctrl-C.
        signal.signal(signal.SIGTERM, _interrupt)
        call_command("migrate", interactive=False, verbosity=0)
        password = self.ensure_operator()
        env = dict(os.environ)
        started: list[tuple[str, subprocess.Popen]] = []
        redis = None
        if not reachable(settings.REDIS_URL, 6379):
            redis_port = urlsplit(settings.REDIS_URL).port or 6379
            redis = LocalRedis(settings.VAR_DIR / "redis", port=redis_port).start()
            self.stdout.write(f"Redis started on {redis.url}")
        python = sys.executable
        commands = {
            "worker": [
                python,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "-Q",
                "tokens,sync,default",
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
            ],
            "beat": [python, "-m", "celery", "-A", "portal", "beat", "--loglevel", "INFO"],
            "web": [python, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        }
        try:
            for name, command in commands.items():
                started.append((name, subprocess.Popen(command, env=env, start_new_session=True)))
            base = settings.PORTAL_BASE_URL
            self.stdout.write(
                self.style.SUCCESS(
                    f"\nGraphport is running.\n"
                    f"  Admin:  {base}/admin/   operator login: operator / {password}\n"
                    f"  Health: {base}/healthz\n"
                    "Press Ctrl-C to stop.\n"
                )
            )
            self.supervise(started)
        except KeyboardInterrupt:
            self.stdout.write("\nStopping…")
        finally:
            for _name, process in reversed(started):
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
            for _name, process in started:
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
            if redis:
                redis.stop()

    def supervise(self, started) -> None:
        while True:
            for name, process in started:
                if process.poll() is not None:
                    self.stderr.write(f"{name} exited with code {process.returncode}; stopping.")
                    return
            time.sleep(0.5)

    def ensure_operator(self) -> str:
        """An operator (superuser) login, created on the first run; its password is kept in
        var/operator-password so later runs can print it again."""
        path = settings.VAR_DIR / "operator-password"
        users = get_user_model().objects
        if users.filter(is_superuser=True).exists():
            return path.read_text().strip() if path.exists() else "(the password you set)"
        password = secrets.token_urlsafe(12)
        users.create_superuser("operator", "operator@example.com", password)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(password + "\n")
        path.chmod(0o600)
        return password
