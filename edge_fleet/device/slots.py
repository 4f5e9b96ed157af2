"""A device's disk: `state.json` (token, active slot, what each slot holds, the
versions that failed here) and the two model slots `a/` and `b/`. The state file is
replaced atomically and durably (files.py: write, fsync, rename, fsync
the folder), so a device killed or losing power at any point restarts on the state
before or after a change, never half of one."""

from __future__ import annotations

import json
from pathlib import Path

from edge_fleet.device.files import atomic_write


def load_state(home: Path) -> dict:
    path = home / "state.json"
    if path.exists():
        return json.loads(path.read_text())
    return {"token": None, "active": None, "slots": {}, "failed": {}}


def save_state(home: Path, state: dict) -> None:
    atomic_write(home / "state.json", json.dumps(state).encode(), mode=0o600)


def active_version(state: dict) -> str | None:
    active = state["active"]
    return state["slots"][active]["version"] if active else None


def model_path(home: Path, state: dict, slot: str) -> Path:
    return home / slot / state["slots"][slot]["filename"]


def spare_slot(state: dict) -> str:
    return "b" if state["active"] == "a" else "a"
