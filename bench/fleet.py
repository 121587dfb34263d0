"""Benchmark 3: a refresh fleet. N delegated connections whose access tokens expire within the
next minutes; `dispatch_token_refreshes` (the beat task) enqueues them and two Celery workers on
the tokens queue refresh them. Measured: time until every connection holds a new token, token
requests per connection at the emulator (exactly one each), connections missed.

The connections hold real emulator refresh tokens: each user signs in (the emulator's scripted
sign-in) and its code is exchanged at the token endpoint, many at once. Only the rows are then
written in bulk, skipping ID-token validation, which this benchmark does not measure.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import urlencode

import requests

from bench.common import Row, make_app, scenario, workers
from emulator.testing import running_emulator

FULL = 5000
QUICK = 40
WORKERS = 2
CONCURRENCY = 4  # prefork processes per worker
SIGN_IN_THREADS = 8


def run(env: dict[str, str], quick: bool, options: dict) -> list[Row]:
    count = QUICK if quick else FULL
    spec = scenario()
    tenant = spec["tenants"][0]
    tenant["users"] += [
        {"upn": f"fleet.{i}@contoso.example", "display_name": f"Fleet {i}", "mailbox": False}
        for i in range(count)
    ]
    spec["consents"] = [
        {"tenant": tenant["id"], "client_id": spec["apps"][0]["client_id"], "admin": True}
    ]
    with running_emulator(spec) as emu:
        app = make_app(emu, "Bench fleet")
        print(f"  signing {count:,} users in ...", flush=True)
        started = time.perf_counter()
        tokens = sign_in_all(emu, app, [f"fleet.{i}@contoso.example" for i in range(count)])
        print(f"  {count:,} code exchanges in {time.perf_counter() - started:.0f} s", flush=True)
        ids = store_connections(app, tenant["id"], tokens)
        emu.control.reset_counters()
        figures = refresh_all(env, emu, app, ids)
    detail(figures, count)
    return rows(figures, count)


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign_in_all(emu, app, upns: list[str]) -> list[dict]:
    """Sign-in + code exchange per user, as the connect flow does, many at once."""
    secret = app.usable_secrets[0].value
    scopes = " ".join(app.requested_scopes)

    def one(upn: str) -> dict:
        verifier, challenge = _pkce()
        query = {
            "client_id": app.client_id,
            "response_type": "code",
            "redirect_uri": app.redirect_uri,
            "scope": scopes,
            "state": secrets.token_urlsafe(16),
            "nonce": secrets.token_urlsafe(16),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        outcome = emu.control.sign_in(f"{app.authorize_url}?{urlencode(query)}", upn)
        params = outcome.get("params") or outcome.get("fields") or {}
        if "code" not in params:
            raise RuntimeError(f"sign-in of {upn} failed: {outcome}")
        response = requests.post(
            app.token_url,
            data={
                "grant_type": "authorization_code",
                "client_id": app.client_id,
                "client_secret": secret,
                "code": params["code"],
                "redirect_uri": app.redirect_uri,
                "code_verifier": verifier,
                "scope": scopes,
            },
            timeout=30,
        )
        response.raise_for_status()
        token = response.json()
        claims = _claims(token["id_token"])
        return {**token, "oid": claims["oid"], "upn": upn}

    with ThreadPoolExecutor(max_workers=SIGN_IN_THREADS) as pool:
        return list(pool.map(one, upns))


def _claims(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def store_connections(app, tenant_id: str, tokens: list[dict]) -> list[int]:
    """Write the connections in bulk, their access tokens expiring 1 to 4 minutes from now."""
    from django.utils import timezone

    from connections.models import Connection

    now = timezone.now()
    rows = [
        Connection(
            app=app,
            kind=Connection.Kind.DELEGATED,
            ms_tenant_id=tenant_id,
            ms_object_id=t["oid"],
            display_name=t["upn"],
            user_principal_name=t["upn"],
            granted_scopes=t.get("scope", ""),
            access_token=t["access_token"],
            refresh_token=t["refresh_token"],
            access_token_expires_at=now + timedelta(seconds=random.uniform(60, 240)),
            refresh_token_updated_at=now,
            last_refreshed_at=now,
            status=Connection.Status.ACTIVE,
        )
        for t in tokens
    ]
    Connection.objects.bulk_create(rows, batch_size=1000)
    return list(
        Connection.objects.filter(app=app, display_name__startswith="fleet.").values_list(
            "pk", flat=True
        )
    )


def refresh_all(env: dict[str, str], emu, app, ids: list[int]) -> dict:
    from django.utils import timezone

    from connections.models import Connection
    from connections.tasks import dispatch_token_refreshes

    deadline = 600 + len(ids) * 0.2
    with workers(env, WORKERS, "tokens", queue="tokens", pool="prefork", concurrency=CONCURRENCY):
        since = timezone.now()
        started = time.perf_counter()
        enqueued = dispatch_token_refreshes()
        dispatched = time.perf_counter() - started
        fleet = Connection.objects.filter(pk__in=ids)
        done = 0
        while time.perf_counter() - started < deadline:
            done = fleet.filter(last_refreshed_at__gt=since).count()
            if done == len(ids):
                break
            time.sleep(0.25)
        seconds = time.perf_counter() - started
        # Stragglers would show as a second request: wait a moment before counting.
        time.sleep(2)
    refreshed = fleet.filter(last_refreshed_at__gt=since).count()
    failed = fleet.exclude(status=Connection.Status.ACTIVE).count()
    oids = set(fleet.values_list("ms_object_id", flat=True))
    counts = {
        r["user_id"]: r["count"]
        for r in emu.control.token_requests(app.client_id, "refresh_token")
        if r["user_id"] in oids
    }
    per_connection = [counts.get(oid, 0) for oid in oids]
    return {
        "enqueued": enqueued,
        "dispatch_seconds": dispatched,
        "seconds": seconds,
        "refreshed": refreshed,
        "failed": failed,
        "requests": sum(per_connection),
        "exactly_one": sum(1 for c in per_connection if c == 1),
        "more_than_one": sum(1 for c in per_connection if c > 1),
        "none": sum(1 for c in per_connection if c == 0),
    }


def detail(f: dict, count: int) -> None:
    print(
        f"\n3. Refresh fleet: {count:,} connections expiring within 1-4 minutes, "
        f"{WORKERS} workers (prefork, {CONCURRENCY} processes each)\n"
    )
    print(
        f"dispatch: {f['enqueued']:,} enqueued in {f['dispatch_seconds']:.1f} s; all refreshed "
        f"after {f['seconds']:.1f} s ({count / f['seconds']:,.0f}/s)"
    )
    print(
        f"refreshed {f['refreshed']:,}/{count:,}, failed {f['failed']}; refresh_token requests "
        f"{f['requests']:,}: exactly one for {f['exactly_one']:,}, more for "
        f"{f['more_than_one']}, none for {f['none']}"
    )


def rows(f: dict, count: int) -> list[Row]:
    return [
        Row(
            "3 refresh fleet",
            f"s until {count:,} refreshed",
            f"{f['seconds']:.1f} ({count / f['seconds']:,.0f}/s)",
        ),
        Row(
            "3 refresh fleet",
            "token requests per connection",
            f"{f['requests'] / count:.3f} ({f['exactly_one']:,} exactly 1)",
            target="exactly 1",
            met=f["exactly_one"] == count,
        ),
        Row(
            "3 refresh fleet",
            "connections missed",
            f"{count - f['refreshed']}",
            target="0",
            met=f["refreshed"] == count and f["failed"] == 0,
        ),
    ]
