"""`--state-file`: grants and tokens survive a restart of the emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from devtools.localservices import free_port, wait_for_port
from emulator.control import Control
from emulator.testing import DEMO_SCENARIO
from tests.emulator.conftest import CLIENT_ID, SECRET

ROOT = Path(__file__).resolve().parents[2]


def start(state: Path, login: int, graph: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulator",
            "--scenario",
            str(DEMO_SCENARIO),
            "--login-port",
            str(login),
            "--graph-port",
            str(graph),
            "--state-file",
            str(state),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(login, process, "emulator")
    wait_for_port(graph, process, "emulator")
    return process


def test_a_refresh_token_still_works_after_a_restart(tmp_path):
    state = tmp_path / "state.json"
    login, graph = free_port(), free_port()
    process = start(state, login, graph)
    base = f"http://127.0.0.1:{login}"
    authorize = (
        f"{base}/common/oauth2/v2.0/authorize?client_id={CLIENT_ID}&response_type=code"
        "&redirect_uri=http%3A%2F%2F127.0.0.1%3A8000%2Fconnections%2Fcallback%2F"
        "&scope=openid+offline_access+User.Read&state=s"
    )
    code = Control(base).sign_in(authorize, "adele.vance@contoso.example")["params"]["code"]
    token = requests.post(
        f"{base}/common/oauth2/v2.0/token",
        data={
            "grant_type": "authorization_code",
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "code": code,
            "redirect_uri": "http://127.0.0.1:8000/connections/callback/",
        },
        timeout=10,
    ).json()
    os.kill(process.pid, signal.SIGTERM)
    process.wait(10)
    assert json.loads(state.read_text())["refresh"]

    process = start(state, login, graph)
    try:
        refreshed = requests.post(
            f"{base}/common/oauth2/v2.0/token",
            data={
                "grant_type": "refresh_token",
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
                "refresh_token": token["refresh_token"],
                "scope": "User.Read offline_access",
            },
            timeout=10,
        )
        assert refreshed.status_code == 200, refreshed.text
        me = requests.get(
            f"http://127.0.0.1:{graph}/v1.0/me",
            timeout=10,
            headers={"Authorization": f"Bearer {token['access_token']}"},
        )
        assert me.status_code == 200
    finally:
        process.terminate()
        process.wait(10)
