"""Run the whole portal for development: the Microsoft emulator with demo data, Redis, a Celery
worker, Celery beat and the web server.

`make run` calls this. Data stays in the database (SQLite by default) and in `var/` between
runs. Ctrl-C (or SIGTERM) stops everything this command started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from devtools.localservices import LocalRedis, reachable, wait_for_port
from portal import demo

EMULATOR_SCENARIO = Path(settings.BASE_DIR) / "emulator" / "scenarios" / "demo.json"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Run the emulator, Redis, a Celery worker, Celery beat and the web server together."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--emulator-login-port", type=int, default=5010)
        parser.add_argument("--emulator-graph-port", type=int, default=5011)
        parser.add_argument(
            "--no-emulator", action="store_true", help="do not start the emulator or demo data"
        )

    def handle(self, *args, port: int, no_emulator: bool, **options):
        signal.signal(signal.SIGTERM, _interrupt)
        if not settings.MICROSOFT_ALLOW_HTTP and not no_emulator:
            raise CommandError(
                "MICROSOFT_ALLOW_HTTP: the local emulator speaks http://; set it to true "
                "(make run does) or pass --no-emulator"
            )
        call_command("migrate", interactive=False, verbosity=0)
        started: list[tuple[str, subprocess.Popen]] = []
        redis = None
        python = sys.executable
        env = dict(os.environ)
        try:
            if not reachable(settings.REDIS_URL, 6379):
                redis_port = urlsplit(settings.REDIS_URL).port or 6379
                redis = LocalRedis(settings.VAR_DIR / "redis", port=redis_port).start()
                self.stdout.write(f"Redis started on {redis.url}")
            loaded = None
            if not no_emulator:
                login_url, graph_url = self.start_emulator(options, started, env)
                loaded = demo.load(login_url, graph_url)
                if not settings.SIGNIN_CLIENT_ID:  # Sign in with Microsoft, at the emulator
                    env["SIGNIN_CLIENT_ID"] = demo.DEMO_SIGNIN_CLIENT_ID
                    env["SIGNIN_CLIENT_SECRET"] = demo.DEMO_SIGNIN_SECRET
                    env["SIGNIN_LOGIN_URL"] = login_url
            commands = {
                "worker": [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "portal",
                    "worker",
                    "-Q",
                    "tokens,sync,bulk,default,webhooks",
                    "--concurrency",
                    "2",
                    "--loglevel",
                    "INFO",
                ],
                "beat": [python, "-m", "celery", "-A", "portal", "beat", "--loglevel", "INFO"],
                "web": [python, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            }
            for name, command in commands.items():
                process = subprocess.Popen(
                    command, cwd=settings.BASE_DIR, env=env, start_new_session=True
                )
                started.append((name, process))
            self.welcome(loaded, no_emulator)
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

    def start_emulator(self, options, started, env) -> tuple[str, str]:
        # The demo's mail and calendar are dated around now (the scenario's fixed base time is
        # for tests), so a calendar window around today shows them.
        scenario = json.loads(EMULATOR_SCENARIO.read_text())
        scenario.pop("base_time", None)
        path = settings.VAR_DIR / "emulator-scenario.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(scenario))
        login_port, graph_port = options["emulator_login_port"], options["emulator_graph_port"]
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "emulator",
                "--scenario",
                str(path),
                "--login-port",
                str(login_port),
                "--graph-port",
                str(graph_port),
            ],
            # From the project folder: the emulator is not in the product's wheel, so it is
            # importable only from the checkout.
            cwd=settings.BASE_DIR,
            env=env,
            start_new_session=True,
        )
        started.append(("emulator", process))
        wait_for_port(login_port, process, "the emulator")
        wait_for_port(graph_port, process, "the emulator")
        return f"http://127.0.0.1:{login_port}", f"http://127.0.0.1:{graph_port}"

    def welcome(self, loaded, no_emulator: bool) -> None:
        base = settings.PORTAL_BASE_URL
        lines = [
            "",
            "Graphport is running.",
            f"  Portal: {base}/",
            f"  Admin:  {base}/admin/",
            f"  Health: {base}/healthz",
            "",
        ]
        if loaded:
            lines.append("Demo logins (kept in var/demo-logins.json):")
            lines += [
                f"  {login.username:<15} {login.password:<14} {login.role}"
                for login in loaded.logins
            ]
            lines += [
                "",
                f"API: {base}/api/v1/docs/ with the demo tenant's key",
                f"  curl -H 'Authorization: Bearer {loaded.api_key}' {base}/api/v1/connections",
            ]
            lines += [
                "",
                "Try it: sign in to the portal as megan, press Connect with Microsoft, pick",
                "Adele Vance on the emulator's sign-in page and press Accept; her mail, calendar,",
                "contacts and files arrive within seconds. As contoso-admin, open the app in the",
                "admin to verify its credentials and grant admin consent (directory sync).",
                "Or press Sign in with Microsoft: Alex Wilber is alex's login; Diego Siciliani",
                "joins Contoso (demo) as a new member (its directory is verified and open).",
            ]
        elif no_emulator:
            lines.append(
                "The emulator is off (--no-emulator): register a real Entra app in the admin."
            )
        lines.append("Press Ctrl-C to stop.")
        self.stdout.write(self.style.SUCCESS("\n".join(lines)))

    def supervise(self, started) -> None:
        while True:
            for name, process in started:
                if process.poll() is not None:
                    self.stderr.write(f"{name} exited with code {process.returncode}; stopping.")
                    return
            time.sleep(0.5)
