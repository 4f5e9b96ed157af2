"""The ledger (edge_fleet/ledger.py) on a real fleet server and agents: which
version a device ran at a time, through a rollout, a second rollout started by
drift, and a rollback; as the admin API answers it and as `edgeloop fleet
explain` prints it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from components.errors import ServiceError
from tests.edge_fleet.conftest import ADMIN, drive, make_agents, rollout_over
from tests.flows.test_cli import edgeloop

pytestmark = pytest.mark.integration

# What the release copies from the registry at upload (flows/edge_release.py
# `registry_lineage`), as it would for a version retrained on drift.
DRIFTED = {
    "model": "edgeloop-digits",
    "version": "2",
    "run_id": "5b1f0c9e2a7d4f8c9e3a1b2c3d4e5f60",
    "gate": "passed",
    "seal_sha256": "9f2c" + "0" * 60,
    "promoted": {"who": "edgeloop", "at": "2026-12-07T10:00:00+00:00", "why": "gates"},
    "trigger": "drift",
    "drift_target": "north",
    "drift_share": "0.62",
    "drift_event_id": "0c7e9d5a-1111-4222-8333-944455556666",
    "drift_snapshot_id": "snap-17",
    "prefect_flow_run_id": "a1b2c3d4-0000-4000-8000-000000000001",
    "raw_data_md5": "d41d8cd98f00b204e9800998ecf8427e.dir",
    "prepared_data_md5": "0123456789abcdef0123456789abcdef.dir",
    "git_commit": "fd3290b",
}
FIRST = DRIFTED | {"version": "1", "trigger": "manual", "run_id": "1" * 32}


def all_on(agents, version: str):
    return lambda: all(a.version == version for a in agents)


def test_a_device_is_explained_at_any_time_through_rollouts_and_a_rollback(
    fleet_server, models, digits, http, tmp_path
):
    agents = make_agents(fleet_server, digits, http, 6, home=tmp_path / "devices")
    for agent in agents:
        agent.step()
    admin = fleet_server.admin

    fleet_server.upload("1", models["good-1"], lineage=FIRST)
    first = admin.start_rollout("1", "first release")["rollout"]["id"]
    drive(agents, rollout_over(fleet_server))
    drive(agents, all_on(agents, "1"))
    on_v1 = datetime.now(UTC)

    fleet_server.upload("2", models["good-2"], lineage=DRIFTED)
    second = admin.start_rollout("2", "champion changed")["rollout"]["id"]
    drive(agents, rollout_over(fleet_server))
    drive(agents, all_on(agents, "2"))
    on_v2 = datetime.now(UTC)

    admin.retarget("1", "operator rollback")
    drive(agents, lambda: {d["current_version"] for d in admin.devices()} == {"1"})
    device = agents[0].id.device_id

    then = admin.ledger(device, on_v1.isoformat())
    assert then["ran"]["version"] == "1", then
    assert then["how"]["kind"] == "rollout" and then["how"]["rollout"] == first
    assert then["how"]["stage"] in ("canary", "wave-1", "wave-2", "full")
    assert then["lineage"]["trigger"] == "manual"

    drifted = admin.ledger(device, on_v2.isoformat())
    assert drifted["ran"]["version"] == "2", drifted
    assert drifted["how"]["rollout"] == second
    said = "\n".join(drifted["chain"])
    assert "started by drift on north (share 0.62" in said, said
    assert "prepared 0123456789abcdef0123456789abcdef.dir (DVC)" in said, said
    assert "training run 5b1f0c9e2a7d4f8c9e3a1b2c3d4e5f60" in said, said
    assert f"took this device in at {drifted['how']['stage']}: " in said, said

    now = admin.ledger(device)
    assert now["ran"]["version"] == "1", now
    assert now["how"]["kind"] == "retarget" and now["how"]["rollout"] == second, now

    env = {
        "EDGELOOP_FLEET_PORT": str(fleet_server.port),
        "EDGELOOP_FLEET_ADMIN_TOKEN": ADMIN,
        "EDGELOOP_STATE_DIR": str(tmp_path / "state"),
    }
    out = edgeloop("fleet", "explain", device, "--at", on_v2.isoformat(), env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == drifted["chain"], out.stdout
    refused = edgeloop("fleet", "explain", device, "--at", "yesterday", env=env)
    assert refused.returncode != 0
    assert "'yesterday': expected an ISO 8601 time" in refused.stderr, refused.stderr


def test_the_ledger_refuses_an_unknown_device_and_unknown_lineage(fleet_server, models):
    with pytest.raises(ServiceError, match="404 device 'no-such-device' is not"):
        fleet_server.admin.ledger("no-such-device")
    with pytest.raises(ServiceError, match="422.*unknown key.*'who_knows'"):
        fleet_server.upload(
            "9", models["good-1"], lineage={"run_id": "1", "who_knows": 2}
        )
