"""Each device profile gets the file that is best on its hardware, through the same
signed TUF metadata: a version's file goes to the profiles it fits, and a profile
whose measured best is another variant (fp32 where int8 is slower) gets its own
target in the channel (`channel/stable/cloud`), which its devices take first. The
per-profile target goes through the rollout's stages with the channel, and goes
when a later version has no file of its own for that profile."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression

from components.errors import ServiceError
from edge_fleet.device.agent import Agent
from scenarios.fleet import eligible_profiles, settled
from tests.edge_fleet.conftest import (
    drive,
    linear_onnx,
    make_agents,
    rollout_over,
)

pytestmark = pytest.mark.integration


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _running(agent: Agent) -> str:
    """The SHA-256 of the file the device runs."""
    return agent.state["slots"][agent.state["active"]]["sha256"]


def _release(server, agents: list[Agent], version: str) -> dict:
    server.admin.start_rollout(version, "test")
    drive(agents, rollout_over(server))
    drive(agents, lambda: all(a.version == version for a in agents))
    return server.admin.rollouts()[0]


def test_a_profile_gets_its_own_file_through_the_signed_channels(
    fleet_server, models, digits, http, tmp_path
):
    home = tmp_path / "devices"
    gateways = make_agents(fleet_server, digits, http, 4, home=home, profile="gateway")
    clouds = make_agents(
        fleet_server, digits, http, 4, home=home, profile="cloud", first=4
    )
    agents = gateways + clouds
    for agent in agents:
        agent.step()  # enrolled and seen before the rollout starts
    fit = LogisticRegression(C=0.25, max_iter=2000).fit(digits.x, digits.y)
    fp32 = linear_onnx(tmp_path / "fp32.onnx", fit.coef_.T, fit.intercept_)

    # v1: the version's file fits the gateways; cloud measured fp32 its best.
    fleet_server.upload("1", models["good-1"], profiles=["gateway"])
    stored = fleet_server.admin.upload_profile_file("1", "cloud", fp32, variant="fp32")
    assert stored["profiles"] == ["gateway"]
    assert stored["profile_files"]["cloud"] == {
        "variant": "fp32",
        "filename": "fp32.onnx",
        "sha256": _sha256(fp32),
        "size": fp32.stat().st_size,
    }
    # The same file again is the stored version (a retried release).
    again = fleet_server.admin.upload_profile_file("1", "cloud", fp32, variant="fp32")
    assert again == stored

    first = _release(fleet_server, agents, "1")
    assert first["state"] == "completed", first
    assert {_running(a) for a in gateways} == {_sha256(models["good-1"])}
    assert {_running(a) for a in clouds} == {_sha256(fp32)}
    channels = fleet_server.admin.summary()["channels"]
    assert sorted(channels) == ["channel/stable", "channel/stable/cloud"]
    stable, cloud = channels["channel/stable"], channels["channel/stable/cloud"]
    assert stable["variant"] == "linear" and stable["profiles"] == ["gateway"]
    # The same assignment (version, stage), for cloud, with its own file.
    assert cloud == stable | {
        "variant": "fp32",
        "filename": "fp32.onnx",
        "profiles": ["cloud"],
    }
    # The simulator's scenarios wait for every profile the version goes to.
    assert eligible_profiles(fleet_server.admin) == {"gateway", "cloud"}
    assert settled(fleet_server.admin, agents)

    # A version's files are fixed once it was sent to devices.
    with pytest.raises(ServiceError, match="409 model version 1 was already sent"):
        fleet_server.admin.upload_profile_file("1", "mcu", fp32, variant="fp32")
    with pytest.raises(ServiceError, match="409 model version 1 has another file"):
        fleet_server.admin.upload_profile_file(
            "1", "cloud", models["good-2"], variant="fp32"
        )
    with pytest.raises(ServiceError, match="404 model version 9 was not uploaded"):
        fleet_server.admin.upload_profile_file("9", "cloud", fp32, variant="fp32")

    # v2: its own file is cloud's best too; cloud's own target goes with v1.
    fleet_server.upload("2", models["good-2"], profiles=["gateway", "cloud"])
    second = _release(fleet_server, agents, "2")
    assert second["state"] == "completed", second
    assert {_running(a) for a in agents} == {_sha256(models["good-2"])}
    assert sorted(fleet_server.admin.summary()["channels"]) == ["channel/stable"]
