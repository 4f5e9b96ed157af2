"""The closed loop, end to end, as `make run` runs it (`edgeloop up`, `edgeloop run`,
`edgeloop loop`) on a scratch project and a small fleet: drift on one cohort is
detected, the drift automation retrains on the worker, the new version passes the
gates and reaches every device of that cohort; the version's tags link it to the
drift event; the running Evidently UI's dashboard series show the spike and the
recovery; the old champion's accuracy on the cohort's delayed labels is measured."""

from __future__ import annotations

import re

import httpx
import pytest
from mlflow import MlflowClient

from components.settings import Settings
from edge_fleet.client import FleetAdmin
from flows.services import free_port, stack_secrets
from tests.conftest import FAST_OPTIMIZE, default_params_dict, make_project
from tests.flows.test_cli import edgeloop

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PORTS = (
    "MLFLOW",
    "PREFECT",
    "WEBHOOK",
    "SERVING",
    "FLEET",
    "EVIDENTLY",
    "WORKER",
)


def dashboard_series(evidently: str, target: str, metric: str, labels: dict) -> list:
    """What the project's dashboard plots: the UI's own data-series API."""
    projects = httpx.get(f"{evidently}/api/projects", timeout=30).json()
    [project] = [p for p in projects if p["name"] == target]
    reply = httpx.post(
        f"{evidently}/api/v2/snapshots/{project['id']}/data_series_batch",
        json={
            "series_filter": [
                {
                    "tags": [],
                    "metadata": {},
                    "metric": f"evidently:metric_v2:{metric}",
                    "metric_labels": labels,
                }
            ]
        },
        timeout=30,
    )
    reply.raise_for_status()
    return [v for s in reply.json()["series"] for v in s["values"] if v is not None]


def test_the_loop_closes_on_a_small_fleet(tmp_path):
    params = default_params_dict(
        optimize=FAST_OPTIMIZE,  # the int8 file is deployable to gateways
        registry={"model_name": "it-loop"},
        fleet={
            "poll_s": 0.5,
            "bake_s": 1.0,
            "canary_percent": 20,
            "waves": [50],
            "cohorts": ["north", "south"],
            # mcu devices cannot take the int8 file: they keep what they run
            "profile_mix": {"gateway": 0.7, "mcu": 0.3},
        },
        monitoring={
            "device_window_reports": 40,
            "device_min_reports": 20,
            "reference_batches": 150,
        },
    )
    project = make_project(tmp_path / "project", params)
    env = {f"EDGELOOP_{name}_PORT": str(free_port()) for name in PORTS} | {
        "EDGELOOP_STATE_DIR": str(tmp_path / "state")
    }
    try:
        for command in (("up",), ("run",)):
            out = edgeloop(*command, cwd=project, env=env, timeout=600)
            assert out.returncode == 0, out.stdout + out.stderr
        loop = edgeloop(
            "loop",
            "--devices",
            "10",
            "--label-rows",
            "400",
            "--max-s",
            "420",
            cwd=project,
            env=env,
            timeout=900,
        )
        assert loop.returncode == 0, loop.stdout + loop.stderr
        assert "loop closed" in loop.stdout
        cohort = re.search(r"drift share of cohort-(\w+)", loop.stdout).group(1)
        assert cohort == "north"  # auto: the first cohort that never drifted

        # The new version runs on every device of the drifting cohort.
        client = MlflowClient(f"http://127.0.0.1:{env['EDGELOOP_MLFLOW_PORT']}")
        champion = client.get_model_version_by_alias("it-loop", "champion")
        assert champion.version != "1"
        settings = Settings(
            state_dir=tmp_path / "state", fleet_port=int(env["EDGELOOP_FLEET_PORT"])
        )
        fleet = FleetAdmin(
            settings.fleet_url, stack_secrets(settings)["fleet_admin_token"]
        )
        devices = fleet.devices(cohort)
        assert len(devices) == 5  # 10 devices, two cohorts
        by_profile = {
            p: {d["current_version"] for d in devices if d["profile"] == p}
            for p in ("gateway", "mcu")
        }
        assert by_profile["gateway"] == {champion.version}
        assert by_profile["mcu"] in (set(), {None})

        # Why it changed: the drift event on the version, and the gate decision.
        tags = champion.tags
        assert tags["edgeloop.trigger"] == "drift"
        assert tags["edgeloop.trigger.target"] == f"cohort-{cohort}"
        assert float(tags["edgeloop.trigger.drift_share"]) >= 0.3
        assert (
            tags["edgeloop.trigger.snapshot_id"] and tags["edgeloop.gate"] == "passed"
        )
        assert tags["edgeloop.trigger.event_id"] in loop.stdout

        # The Evidently UI: the cohort's drift share spikes, then recovers against
        # the new champion's reference; the old champion's accuracy on the delayed
        # labels is on the same dashboard.
        evidently = f"http://127.0.0.1:{env['EDGELOOP_EVIDENTLY_PORT']}"
        shares = dashboard_series(
            evidently,
            f"cohort-{cohort}",
            "DriftedColumnsCount",
            {"value_type": "share"},
        )
        assert max(shares) >= 0.3 and shares[-1] < 0.3, shares
        quiet = dashboard_series(
            evidently, "cohort-south", "DriftedColumnsCount", {"value_type": "share"}
        )
        assert quiet and max(quiet) < 0.3, quiet  # not measured against north's rows
        # The prediction distribution and data quality panels have their points.
        class_means = dashboard_series(evidently, f"cohort-{cohort}", "MeanValue", {})
        assert len(class_means) == 10 * len(shares)  # ten classes per check
        rows = dashboard_series(evidently, f"cohort-{cohort}", "RowCount", {})
        assert len(rows) >= len(shares) and min(rows) >= 20
        accuracy = dashboard_series(evidently, f"cohort-{cohort}", "Accuracy", {})
        assert accuracy and accuracy[0] < 0.9, accuracy  # v1 on the noisy labels
    finally:
        edgeloop("down", cwd=project, env=env)
