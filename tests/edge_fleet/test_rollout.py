"""Rollouts through the real fleet server and real device agents: canary -> wave ->
full; a model that cannot load, and one that loads but answers wrongly, are stopped
at the canary and rolled back by themselves with a machine-readable cause; faults
(cut downloads, a device dying mid-install, a server restarted mid-rollout) leave
no device without a working model."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import numpy as np
import pytest

from edge_fleet.device.agent import Agent
from edge_fleet.sim.faults import Faults, PowerLoss
from tests.edge_fleet.conftest import (
    drive,
    linear_onnx,
    make_agents,
    make_fleet_server,
    rollout_over,
    stored_rollout_states,
)

pytestmark = pytest.mark.integration


def _release(server, agents, version: str, model: Path) -> dict:
    server.upload(version, model)
    server.admin.start_rollout(version, "test")
    drive(agents, rollout_over(server))
    return server.admin.rollouts()[0]


def _events(rollout: dict) -> list[str]:
    return [f"{e['event']}:{e.get('stage')}" for e in rollout["events"]]


def test_canary_waves_full_and_bad_models_rolled_back(
    fleet_server_on, models, digits, http, tmp_path
):
    fleet_server = fleet_server_on  # on SQLite, then on PostgreSQL
    agents = make_agents(fleet_server, digits, http, 12, home=tmp_path / "devices")
    for agent in agents:
        agent.step()  # enrolled and seen before the rollout starts
    first = _release(fleet_server, agents, "1", models["good-1"])
    assert first["state"] == "completed", first
    assert _events(first) == [
        "started:canary",
        "stage_passed:canary",
        "stage_started:wave-1",
        "stage_passed:wave-1",
        "stage_started:full",
        "stage_passed:full",
        "completed:None",
    ]
    drive(agents, lambda: all(a.version == "1" for a in agents))

    second = _release(fleet_server, agents, "2", models["good-2"])
    assert second["state"] == "completed", second  # judged against v1: healthy
    # Each stage records every check it was judged on, with its numbers (the
    # console shows them): against v1 on the same devices, all passed.
    passed = [e for e in second["events"] if e["event"] == "stage_passed"]
    for event in passed:
        names = [c["check"] for c in event["checks"]]
        assert names[:2] == ["install_success", "error_rate"], event
        assert not any(c["failed"] for c in event["checks"]), event
    assert any("confidence_drop" in str(e["checks"]) for e in passed), passed
    drive(agents, lambda: all(a.version == "2" for a in agents))

    # A file that loads on the server and fails on the devices' own rows: every
    # canary device fails its install. (One that does not load at all is refused
    # at upload: test_server_api.)
    broken = _release(fleet_server, agents, "3", models["fails-on-data"])
    assert broken["state"] == "rolled_back"
    assert broken["cause"]["check"] == "install_success"
    assert broken["cause"]["stage"] == "canary"
    assert broken["cause"]["value"] < broken["cause"]["threshold"]
    assert all(a.version == "2" for a in agents)  # never without a working model
    failed = [d for d in fleet_server.admin.devices() if d["failed_version"] == "3"]
    assert failed and len(failed) < len(agents)  # the canary only
    assert all("non-finite values" in (d["last_error"] or "") for d in failed)

    # A model that loads and answers, but (almost) always the same class.
    w, b = _weights(models["good-1"])
    b = b.copy()
    b[0] += 1000.0
    collapsed = linear_onnx(tmp_path / "collapsed.onnx", w, b)
    bad = _release(fleet_server, agents, "4", collapsed)
    assert bad["state"] == "rolled_back", bad
    assert bad["cause"]["check"] in {"class_shift", "confidence_drop"}, bad["cause"]
    assert bad["cause"]["stage"] == "canary"
    [stopped] = [e for e in bad["events"] if e["event"] == "rolled_back"]
    assert bad["cause"]["check"] in [
        c["check"] for c in stopped["checks"] if c["failed"]
    ]
    # The canary devices went back to v2 (from their other slot, no download).
    drive(agents, lambda: all(a.version == "2" for a in agents))
    assert fleet_server.admin.summary()["channels"]["channel/stable"]["version"] == "2"
    # Kept in the database the setting chose (and only there).
    assert stored_rollout_states(fleet_server) == [
        "completed",
        "completed",
        "rolled_back",
        "rolled_back",
    ]
    sqlite_file = fleet_server.state_dir / "fleet.db"
    assert sqlite_file.exists() is (fleet_server.database_url is None)


def test_the_same_file_as_a_new_version_completes_without_a_download(
    fleet_server, models, digits, http, tmp_path
):
    agents = make_agents(fleet_server, digits, http, 8, home=tmp_path / "devices")
    for agent in agents:
        agent.step()
    first = _release(fleet_server, agents, "1", models["good-1"])
    assert first["state"] == "completed", first
    drive(agents, lambda: all(a.version == "1" for a in agents))
    # A re-registered model: new version, byte-identical file.
    again = _release(fleet_server, agents, "2", models["good-1"])
    assert again["state"] == "completed", again
    drive(agents, lambda: all(a.version == "2" for a in agents))
    assert all(d["current_version"] == "2" for d in fleet_server.admin.devices())
    for agent in agents:  # no spare slot written: nothing was downloaded again
        assert list(agent.state["slots"]) == [agent.state["active"]]
        assert not (
            agent.home / ("b" if agent.state["active"] == "a" else "a")
        ).exists()


def _weights(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    init = {
        t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
    }
    return init["W"], init["b"]


def test_cut_downloads_resume_with_range_requests(
    fleet_server, models, digits, http, tmp_path
):
    agents = make_agents(
        fleet_server,
        digits,
        http,
        4,
        home=tmp_path / "devices",
        faults=lambda _: Faults(cut_download=1.0),
    )
    for agent in agents:
        agent.step()
    rollout = _release(fleet_server, agents, "1", models["good-1"])
    assert rollout["state"] == "completed"
    drive(agents, lambda: all(a.version == "1" for a in agents))
    assert all(a.resumes >= 1 for a in agents)  # each download was cut and resumed
    size = models["good-1"].stat().st_size
    # Resumed, not restarted: bytes received stay close to the file's size
    # (plus the signed metadata), not a multiple of it.
    assert all(a.bytes_received < size + 12_000 for a in agents), [
        a.bytes_received for a in agents
    ]


def test_device_dying_mid_install_restarts_on_its_working_model(
    fleet_server, models, digits, http, tmp_path
):
    home = tmp_path / "devices"
    [device] = make_agents(fleet_server, digits, http, 1, home=home)
    device.step()
    _release(fleet_server, [device], "1", models["good-1"])
    drive([device], lambda: device.version == "1")

    device.faults = Faults(power_loss=True)
    fleet_server.upload("2", models["good-2"])
    fleet_server.admin.start_rollout("2", "test")
    with pytest.raises(PowerLoss):
        drive([device], lambda: False, max_s=30)

    # Power back: a new agent process on the same disk.
    [rebooted] = make_agents(fleet_server, digits, http, 1, home=home)
    assert rebooted.version == "1"
    assert rebooted.telemetry()["inferences"] > 0  # the old slot still answers
    drive([rebooted], rollout_over(fleet_server))
    drive([rebooted], lambda: rebooted.version == "2")
    assert fleet_server.admin.rollouts()[0]["state"] == "completed"


def test_server_restart_mid_rollout_resumes_from_its_recorded_stage(
    models, digits, http, tmp_path, fleet_database_url
):
    server = make_fleet_server(tmp_path, fleet_database_url, bake_s=1.0)
    server.start()
    try:
        agents = make_agents(server, digits, http, 8, home=tmp_path / "devices")
        for agent in agents:
            agent.step()
        server.upload("1", models["good-1"])
        rollout_id = server.admin.start_rollout("1", "test")["rollout"]["id"]
        drive(
            agents,
            lambda: server.admin.rollout(rollout_id)["stage_name"] == "wave-1",
        )
        server.kill(signal.SIGKILL)  # no clean shutdown
        for agent in agents:  # devices keep their models while the server is gone
            with pytest.raises(httpx.ConnectError):
                agent.step()
        server.start()
        drive(agents, rollout_over(server))
        rollout = server.admin.rollout(rollout_id)
        assert rollout["state"] == "completed"
        assert _events(rollout).count("started:canary") == 1
        assert _events(rollout).count("stage_passed:canary") == 1  # not redone
        drive(agents, lambda: all(a.version == "1" for a in agents))
    finally:
        server.kill()


def test_fleet_wide_failure_share_stops_everything(models, digits, http, tmp_path):
    server = make_fleet_server(
        tmp_path, canary_cohort="north", checks={"abort_failed_percent": 20}
    )
    server.start()
    try:
        # Every device is faulty: the canary cohort alone is over the fleet-wide
        # threshold of failed devices.
        agents: list[Agent] = make_agents(
            server,
            digits,
            http,
            6,
            home=tmp_path / "devices",
            faults=lambda _: Faults(broken_hardware=True),
        )
        for agent in agents:
            agent.step()
        rollout = _release(server, agents, "1", models["good-1"])
        assert rollout["state"] == "rolled_back"
        assert rollout["cause"]["check"] == "fleet_failed_percent"
        assert rollout["cause"]["value"] > rollout["cause"]["threshold"]
    finally:
        server.kill()


def _slow_onnx(path: Path, digits) -> Path:
    """Answers like good-1 (its logits plus a 2,048-wide hidden layer that adds
    nothing) but does ~4 M multiply-adds more per row: a file that installs, loads
    and answers, and is far slower on the device."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(max_iter=300).fit(digits.x, digits.y)
    rng = np.random.default_rng(0)
    tensors = {
        "W": fit.coef_.T,
        "b": fit.intercept_,
        "W1": rng.normal(0, 0.01, (64, 2048)),
        "W2": rng.normal(0, 0.01, (2048, 2048)),
        "W3": np.zeros((2048, 10)),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["linear"]),
        helper.make_node("MatMul", ["x", "W1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "W2"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("MatMul", ["r2", "W3"], ["zero"]),
        helper.make_node("Add", ["linear", "zero"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 10])],
        initializer=[
            numpy_helper.from_array(v.astype(np.float32), k) for k, v in tensors.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_a_canary_slower_in_the_devices_own_benchmark_is_rolled_back(
    models, digits, http, tmp_path
):
    """Each canary device times the new file against the one it runs, together, in
    its smoke test; the stage is judged on those ratios (no 1 ms floor here: the
    digits files are sub-millisecond)."""
    server = make_fleet_server(
        tmp_path, checks={"abort_failed_percent": 50, "min_latency_ms": 0.0}
    )
    server.start()
    try:
        agents = make_agents(server, digits, http, 8, home=tmp_path / "devices")
        for agent in agents:
            agent.step()
        assert _release(server, agents, "1", models["good-1"])["state"] == "completed"
        drive(agents, lambda: all(a.version == "1" for a in agents))
        slow = _release(server, agents, "2", _slow_onnx(tmp_path / "slow.onnx", digits))
        assert slow["state"] == "rolled_back", slow
        cause = slow["cause"]
        assert cause["check"] == "latency_ratio" and cause["stage"] == "canary", cause
        assert "on-device benchmark" in cause["detail"], cause
        assert cause["value"] > cause["threshold"]
        reports = server.admin.telemetry(limit=500)
        benchmarks = [r["benchmark"] for r in reports if r["version"] == "2"]
        assert benchmarks and all(
            b and b["previous_version"] == "1" and b["ms"] > b["previous_ms"]
            for b in benchmarks
        ), benchmarks
        drive(agents, lambda: all(a.version == "1" for a in agents))
    finally:
        server.kill()
