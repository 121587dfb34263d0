"""Keep the emulator's grants and tokens across restarts (`--state-file`), so the portal's
stored refresh tokens stay valid when `make run` is started again. Data items are not kept:
they are generated again from the scenario's seed."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from emulator.directory import Consent
from emulator.runtime import Emulator
from emulator.tokens import AccessToken, Grant, RefreshToken


def save(emu: Emulator, path: Path) -> None:
    tokens = emu.tokens
    state: dict[str, Any] = {
        "grants": [asdict(grant) for grant in tokens.grants.values()],
        "refresh": [asdict(token) for token in tokens.refresh.values()],
        "access": [asdict(token) for token in tokens.access.values()],
        "consents": [
            {**asdict(consent), "scopes": sorted(consent.scopes)}
            for consent in emu.world.directory.consents.values()
        ],
    }
    # Written whole, then renamed: a crash never leaves half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".emulator-state-")
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle)
    os.replace(tmp, path)


def load(emu: Emulator, path: Path) -> bool:
    if not path.exists():
        return False
    state = json.loads(path.read_text())
    tokens = emu.tokens
    for row in state.get("grants", []):
        tokens.grants[row["id"]] = Grant(**row)
    for row in state.get("refresh", []):
        tokens.refresh[row["token"]] = RefreshToken(**row)
    for row in state.get("access", []):
        tokens.access[row["token"]] = AccessToken(**row)
    consents = emu.world.directory.consents
    for row in state.get("consents", []):
        consent = Consent(**{**row, "scopes": set(row["scopes"])})
        consents[(consent.tenant_id, consent.client_id, consent.user_id)] = consent
    return True
