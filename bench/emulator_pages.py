"""How many 1,000-message pages per second the emulator serves (one client, keep-alive).

python bench/emulator_pages.py [--seconds 5] [--messages 50000] [--select subject,from]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import orjson
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.testing import DEMO_SCENARIO, running_emulator


def scenario(messages: int) -> dict:
    spec = json.loads(DEMO_SCENARIO.read_text())
    tenant = spec["tenants"][0]
    tenant["users"].append({"upn": "bench.box@contoso.example", "data": {"messages": messages}})
    spec["consents"] = [
        {"tenant": tenant["id"], "client_id": spec["apps"][0]["client_id"], "admin": True}
    ]
    return spec


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--select", default="")
    args = parser.parse_args()
    spec = scenario(args.messages)
    app = spec["apps"][0]
    with running_emulator(spec) as emu:
        token = requests.post(
            f"{emu.login_url}/{spec['tenants'][0]['id']}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": app["client_id"],
                "client_secret": app["secrets"][0]["value"],
                "scope": "https://graph.microsoft.com/.default",
            },
            timeout=10,
        ).json()["access_token"]
        emu.control.throttle_mailbox(budget=10**9)
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        first = f"{emu.graph_url}/v1.0/users/bench.box@contoso.example/messages?$top=1000"
        if args.select:
            first += f"&$select={args.select}"
        pages = messages = size = 0
        url = first
        started = time.perf_counter()
        while time.perf_counter() - started < args.seconds:
            response = http.get(url, timeout=30)
            response.raise_for_status()
            body = orjson.loads(response.content)
            pages += 1
            messages += len(body["value"])
            size += len(response.content)
            url = body.get("@odata.nextLink") or first
        elapsed = time.perf_counter() - started
    print(
        f"{pages / elapsed:.1f} pages/s  {messages / elapsed:,.0f} messages/s  "
        f"{size / pages / 1e6:.2f} MB/page  ({pages} pages in {elapsed:.1f}s, "
        f"select={args.select or 'default'})"
    )


if __name__ == "__main__":
    main()
