"""The load of bench/load.py, run by Locust headless in a process of its own: members and tenant
administrators signing in and going through their pages, and Microsoft Graph's change
notifications at a fixed rate.

bench/load.py writes who may sign in and which subscriptions exist to the JSON file named by
LOAD_WORLD and starts `locust -f bench/load_locustfile.py --headless`.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta

from locust import HttpUser, between, constant_throughput, task

WORLD = json.loads(open(os.environ["LOAD_WORLD"]).read())  # noqa: SIM115 (read once, at import)
NOTIFICATIONS_PER_SECOND = float(os.environ.get("LOAD_NOTIFICATIONS_PER_SECOND", "50"))
GRAPH_SENDERS = int(os.environ.get("LOAD_GRAPH_SENDERS", "5"))
_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
_next_login = itertools.count()
_lock = threading.Lock()


def _take(role: str) -> dict:
    """The next login of `role`: each simulated person is one portal login."""
    people = [p for p in WORLD["people"] if p["role"] == role]
    with _lock:
        return people[next(_next_login) % len(people)]


class Person(HttpUser):
    abstract = True
    role = ""
    login_path = "/accounts/login/"
    wait_time = between(2, 6)

    def on_start(self) -> None:
        self.person = _take(self.role)
        page = self.client.get(self.login_path, name="sign-in page")
        token = _CSRF.search(page.text)
        with self.client.post(
            self.login_path,
            {
                "username": self.person["username"],
                "password": self.person["password"],
                "csrfmiddlewaretoken": token.group(1) if token else "",
                "next": "/",
            },
            name="sign in",
            headers={"Referer": self.host + self.login_path},
            catch_response=True,
        ) as response:
            if "/login/" in response.url:  # the form again: not signed in
                response.failure(f"{self.person['username']} was not signed in")

    def page(self, path: str, name: str) -> None:
        """A page of theirs; landing on a sign-in page instead is an error."""
        with self.client.get(path, name=name, catch_response=True) as response:
            if "/login/" in response.url:
                response.failure("sent to the sign-in page")


class Member(Person):
    role = "member"
    weight = 9

    @task(3)
    def my_connections(self) -> None:
        self.page("/connections/", "my connections")

    @task(2)
    def records(self) -> None:
        connection = self.person.get("connection")
        if connection:
            self.page(f"/sync/connections/{connection}/records/", "my records")

    @task(1)
    def status(self) -> None:
        connection = self.person.get("connection")
        if connection:
            self.page(f"/sync/connections/{connection}/status.json", "sync status")


class TenantAdmin(Person):
    role = "admin"
    login_path = "/admin/login/"
    weight = 1

    @task(2)
    def dashboard(self) -> None:
        self.page("/admin/", "admin dashboard")

    @task(2)
    def connections(self) -> None:
        self.page("/admin/connections/connection/", "admin connections")

    @task(1)
    def jobs(self) -> None:
        self.page("/admin/graphsync/syncjob/", "admin sync jobs")

    @task(1)
    def records(self) -> None:
        self.page("/admin/graphsync/record/", "admin records")

    @task(1)
    def runs(self) -> None:
        self.page("/admin/graphsync/syncrun/", "admin runs")


class Graph(HttpUser):
    """Microsoft Graph delivering change notifications: one subscription's change per POST, as
    many POSTs a second as NOTIFICATIONS_PER_SECOND across the senders."""

    fixed_count = GRAPH_SENDERS
    wait_time = constant_throughput(NOTIFICATIONS_PER_SECOND / GRAPH_SENDERS)

    @task
    def notify(self) -> None:
        sub = random.choice(WORLD["subscriptions"])
        expires = (datetime.now(UTC) + timedelta(days=2)).isoformat().replace("+00:00", "Z")
        body = {
            "value": [
                {
                    "subscriptionId": sub["id"],
                    "clientState": sub["client_state"],
                    "changeType": "created",
                    "resource": f"Users/{sub['user']}/Messages/{uuid.uuid4()}",
                    "subscriptionExpirationDateTime": expires,
                    "tenantId": sub["tenant"],
                }
            ]
        }
        self.client.post(
            "/graph/notifications/", json=body, name="graph notification", catch_response=False
        )
