"""`edgeloop fleet simulate` as a user runs it, against a champion the pipeline
registered: the int8 file goes canary -> wave -> full to every eligible simulated
device, and a deliberately broken release is rolled back by itself at the canary."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from cli.services import make_fleet_root
from edge_fleet.client import FleetAdmin
from stack.net import free_port
from stack.secrets import stack_secrets
from stack.services import fleet_spec
from tests.conftest import project_of, register_copy
from tests.flows.test_cli import edgeloop
from tests.services import start_service, stop_pid

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_simulate_rolls_out_the_champion_and_stops_a_broken_release(
    stack_settings, mlflow_uri, champion, tmp_path
):
    from prefect.settings import PREFECT_API_URL

    # The session's champion (its int8 file deployable to the gateway profile only)
    # as this test's own model.
    project = project_of(
        champion,
        tmp_path,
        registry={"model_name": "it-fleet"},
        fleet={
            "poll_s": 0.5,
            "bake_s": 1.0,
            "canary_percent": 10,
            "waves": [50],
            "profile_mix": {"gateway": 0.8, "mcu": 0.2},
        },
    )
    champion = register_copy(MlflowClient(mlflow_uri), champion, "it-fleet")  # v1
    settings = stack_settings.model_copy(
        update={
            "state_dir": tmp_path / "state",
            "prefect_api_url": PREFECT_API_URL.value(),
            "fleet_port": free_port(),
        }
    )
    make_fleet_root(settings, project / "params.yaml")  # as `edgeloop up` does
    fleet = start_service(fleet_spec(settings, project / "params.yaml"), settings)
    env = {
        "EDGELOOP_STATE_DIR": str(settings.state_dir),
        "EDGELOOP_MLFLOW_TRACKING_URI": mlflow_uri,
        "EDGELOOP_PREFECT_API_URL": PREFECT_API_URL.value(),
        "EDGELOOP_FLEET_PORT": str(settings.fleet_port),
    }
    try:
        out = edgeloop(
            "fleet",
            "simulate",
            "--devices",
            "40",
            "--broken-release",
            "--cut",
            "0.3",
            "--max-s",
            "150",
            cwd=project,
            env=env,
            timeout=400,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert f"champion v{champion}: fleet settled" in out.stdout, out.stdout
        assert (
            f"broken release v{champion}-broken: rollout 2 rolled_back at canary"
            in out.stdout
        ), out.stdout
        admin = FleetAdmin(
            settings.fleet_url, stack_secrets(settings)["fleet_admin_token"]
        )
        [broken, first] = admin.rollouts()
        assert first["state"] == "completed" and first["version"] == champion
        assert broken["cause"]["check"] in {"install_success", "fleet_failed_percent"}
        devices = admin.devices()
        assert len(devices) == 40
        gateways = [d for d in devices if d["profile"] == "gateway"]
        others = [d for d in devices if d["profile"] != "gateway"]
        assert gateways and all(d["current_version"] == champion for d in gateways)
        assert all(d["current_version"] is None for d in others)  # not eligible
        status = edgeloop("fleet", "status", "--devices", cwd=project, env=env)
        assert status.returncode == 0, status.stderr
        assert "rolled_back at canary" in status.stdout
        assert "channel/stable: v" + champion in status.stdout
        assert status.stdout.count("sim-000") == 40
    finally:
        assert fleet.pid is not None
        stop_pid(fleet.pid)
