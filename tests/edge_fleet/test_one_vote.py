"""A device is one vote, through the real fleet server: a flood of check-ins is
answered 429 with Retry-After (and ops see the device), a report's classes must be
its model's, a cohort's drift window holds at most a few reports of each device
and drifts only when several devices' own reports do; and a stage whose devices
fall silent is judged on those that reported, or paused, never rolled back for
silence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.config import MonitoringConfig, load_params
from edge_fleet.device.polling import next_delay
from edge_fleet.server.checkin_limit import CheckinLimiter, retry_after
from monitoring import drift
from tests.edge_fleet.conftest import (
    FEATURES,
    drive,
    make_agents,
    make_fleet_server,
    rollout_over,
    running,
)

pytestmark = pytest.mark.integration


def _checkin(http, server, device_id: str, token: str, body: dict | None = None):
    return http.post(
        f"{server.url}/v1/devices/{device_id}/checkin",
        json=body or {"health": "no_model"},
        headers={"Authorization": f"Bearer {token}"},
    )


def test_the_checkin_budget_is_a_burst_then_one_per_interval():
    limiter = CheckinLimiter(burst=3, interval_s=0.5)
    assert [limiter.take("d", at=0.0) for _ in range(3)] == [None] * 3
    assert limiter.take("d", at=0.1) == pytest.approx(0.4)  # 0.2 of a token back
    assert limiter.take("d", at=0.5) is None  # one back after the interval
    assert limiter.take("d", at=0.6) == pytest.approx(0.4)
    assert limiter.take("other", at=0.6) is None  # each device its own bucket
    assert limiter.take("d", at=10.0) is None  # refilled, up to the burst only
    assert [limiter.take("d", at=10.0) for _ in range(3)][-1] == pytest.approx(0.5)
    assert limiter.over_budget() == {"d": 3}
    assert retry_after(0.01) == "1" and retry_after(1.2) == "2"


def test_a_flooding_device_gets_429_with_retry_after_and_ops_see_it(
    digits, http, tmp_path
):
    # One token back a minute: the burst is all a flood gets, whatever the
    # machine's speed (the refill itself: the test above, on a given clock).
    with running(make_fleet_server(tmp_path, checkin_min_interval_s=60)) as server:
        flooder, peer = make_agents(server, digits, http, 2, home=tmp_path / "d")
        flooder.enroll()
        peer.enroll()
        codes = [
            _checkin(http, server, "dev-000", flooder.state["token"]).status_code
            for _ in range(200)
        ]
        assert codes == [200] * 10 + [429] * 190
        refused = _checkin(http, server, "dev-000", flooder.state["token"])
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "checks in too often" in refused.json()["detail"]
        # its peer is not held back by it
        assert _checkin(http, server, "dev-001", peer.state["token"]).status_code == 200
        throttled = server.admin.summary()["throttled"]
        assert throttled == {"dev-000": 191}
        # the agent waits as told
        answer = flooder.step()
        assert 1.0 <= answer["retry_after_s"] <= 60.0, answer
        assert next_delay(flooder, server.cfg, 0) == answer["retry_after_s"]
        assert flooder.retry_after_s == 0.0  # taken once


def test_a_report_counts_only_the_classes_its_model_predicts(
    digits, http, tmp_path, models
):
    with running(make_fleet_server(tmp_path)) as server:
        [device] = make_agents(server, digits, http, 1, home=tmp_path / "d")
        device.enroll()
        prior = {str(k): 0.1 for k in range(10)}
        server.admin.upload(
            "1",
            models["good-1"],
            model=load_params(server.params_file).registry.model_name,
            variant="linear",
            profiles=["gateway"],
            features=FEATURES,
            class_prior=prior,
        )
        report = {
            "version": "1",
            "inferences": 64,
            "errors": 0,
            "latency_ms_median": 0.1,
            "latency_ms_p95": 0.2,
            "confidence_mean": 0.9,
            "class_counts": {"3": 64} | {f"bogus-{i}": 0 for i in range(999)},
            "feature_stats": {
                name: [value] * FEATURES
                for name, value in (
                    ("mean", 0.0),
                    ("std", 1.0),
                    ("min", 0.0),
                    ("max", 16.0),
                )
            },
        }
        body = {"health": "ok", "current_version": "1", "telemetry": report}
        reply = _checkin(http, server, device.id.device_id, device.state["token"], body)
        assert reply.status_code == 409, reply.text
        assert "telemetry.class_counts" in reply.text
        assert "999 classes v1 does not predict" in reply.text
        assert server.admin.telemetry() == []  # nothing stored
        report["class_counts"] = {"3": 60, "7": 4}
        reply = _checkin(http, server, device.id.device_id, device.state["token"], body)
        assert reply.status_code == 200, reply.text


def _digits_frame(digits) -> pd.DataFrame:
    frame = pd.DataFrame(digits.x, columns=[f"f{i}" for i in range(FEATURES)])
    return frame.assign(label=digits.y)


def test_one_device_cannot_make_its_cohort_drift(models, digits, http, tmp_path):
    """One device's noisy flood (its sensor broken, or forged) next to two healthy
    peers in one cohort: the window holds 20 of its reports, and the cohort is not
    drifted; when a second device drifts too, it is."""
    server = make_fleet_server(tmp_path, cohorts=["north"], checkin_burst=1000)
    with running(server):
        agents = make_agents(server, digits, http, 3, home=tmp_path / "d")
        for agent in agents:
            agent.step()
        server.upload("1", models["good-1"])
        server.admin.retarget("1", "test")
        drive(agents, lambda: all(a.version == "1" for a in agents))
        flooder, *peers = agents
        flooder.stream.drift, flooder.stream.strength = "noise", 4.0
        for _ in range(60):
            flooder.step()
        for _ in range(10):
            for peer in peers:
                peer.step()
        cfg = MonitoringConfig()
        window = server.admin.telemetry(
            "north",
            cfg.device_window_reports,
            per_device=cfg.max_reports_per_device,
        )
        per_device = pd.Series([r["device_id"] for r in window]).value_counts()
        assert per_device["dev-000"] == cfg.max_reports_per_device, per_device
        assert per_device.drop("dev-000").min() >= 10, per_device

        def judged(reports: list[dict]) -> drift.DriftResult:
            reference, current = drift.device_frames(
                _digits_frame(digits),
                reports,
                batch=server.cfg.telemetry_batch,
                reference_batches=cfg.reference_batches,
                label_column="label",
            )
            return drift.check(
                "cohort-north",
                reference,
                current,
                cfg,
                threshold_scale=np.sqrt(server.cfg.telemetry_batch),
                min_rows=cfg.device_min_reports,
                by_device=True,
            )

        one = judged(window)
        assert one.devices == 3 and one.devices_drifted == 1, one.summary()
        assert not one.drifted, one.summary()
        # the last 100 reports, whoever sent them (main's window): one device's
        # flood is most of it, and still only one vote
        flood = judged(server.admin.telemetry("north", 100))
        assert not flood.drifted, flood.summary()
        peers[0].stream.drift, peers[0].stream.strength = "noise", 4.0
        for _ in range(20):
            peers[0].step()
        window = server.admin.telemetry(
            "north",
            cfg.device_window_reports,
            per_device=cfg.max_reports_per_device,
        )
        two = judged(window)
        assert two.devices_drifted == 2 and two.drifted, two.summary()


def _on_v1(server, models, digits, http, home, *, n: int):
    agents = make_agents(server, digits, http, n, home=home)
    for agent in agents:
        agent.step()
    server.upload("1", models["good-1"])
    server.upload("2", models["good-2"])
    server.admin.retarget("1", "test")
    drive(agents, lambda: all(a.version == "1" for a in agents))
    return agents


def test_silent_devices_are_not_failed_installs(models, digits, http, tmp_path):
    """A quarter of the fleet stops reporting: each stage is judged at its
    deadline on the devices that reported, and the rollout completes, naming the
    silent devices (main rolled it back: 'install_success 0.75 < 0.95')."""
    server = make_fleet_server(tmp_path, stage_timeout_s=4)
    with running(server):
        agents = _on_v1(server, models, digits, http, tmp_path / "devices", n=8)
        talking, silent = agents[:6], agents[6:]
        server.admin.start_rollout("2", "test")
        drive(talking, rollout_over(server))
        rollout = server.admin.rollouts()[0]
        assert rollout["state"] == "completed", rollout
        named = {d for e in rollout["events"] for d in e.get("silent", [])}
        assert named and named <= {a.id.device_id for a in silent}, rollout["events"]
        assert all(a.version == "2" for a in talking)


def test_a_stage_short_of_its_quorum_pauses_and_resumes(models, digits, http, tmp_path):
    server = make_fleet_server(tmp_path, stage_timeout_s=3)
    with running(server):
        agents = _on_v1(server, models, digits, http, tmp_path / "devices", n=8)
        talking = agents[:2]  # 2 of 8: short of the default quorum (0.5) at full
        server.admin.start_rollout("2", "test")

        def paused() -> bool:
            return server.admin.rollouts()[0]["state"] != "running"

        drive(talking, paused)
        rollout = server.admin.rollouts()[0]
        assert rollout["state"] == "paused", rollout  # not rolled back
        event = rollout["events"][-1]
        assert event["event"] == "paused_short_of_quorum", event
        assert event["quorum"] == 0.5 and event["reported"] < event["devices"] / 2
        assert set(event["silent"]) <= {a.id.device_id for a in agents[2:]}
        # a person resumes once the devices are back: the stage waits again
        server.admin.act(rollout["id"], "resume")
        drive(agents, rollout_over(server))
        assert server.admin.rollouts()[0]["state"] == "completed"
