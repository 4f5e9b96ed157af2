"""Which of the fleet's two signed channels a device runs: the TUF target paths, and
the assignment's scope (profiles, cohorts, a percent of devices by a stable hash of
the id). The server (edge_fleet/tuf_repo.py, controller.py) decides with the same
functions, so a device and the server never disagree on who is in a stage."""

from __future__ import annotations

import hashlib

# The TUF target paths (stack.contracts.Channel on the server's side; a test holds
# the two equal: the agent does not import the stack).
STABLE, ROLLOUT = "channel/stable", "channel/rollout"


def profile_target(channel: str, profile: str) -> str:
    """A profile's own target in a channel: the file its devices get where their
    profile's measured best is another variant than the version's file."""
    return f"{channel}/{profile}"


def bucket(device_id: str) -> int:
    """A device's place in 0..9999 for percent stages (in basis points: TUF's
    canonical JSON has no floats); the same on server and device."""
    return int(hashlib.sha256(device_id.encode()).hexdigest()[:8], 16) % 10_000


def in_scope(custom: dict, device_id: str, cohort: str, profile: str) -> bool:
    """Whether a channel's assignment covers this device."""
    if profile not in custom.get("profiles", [profile]):
        return False
    if cohort in custom.get("cohorts", []):
        return True
    return bucket(device_id) < int(custom.get("basis_points", 10_000))
