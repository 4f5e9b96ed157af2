"""The whole loop on a data scientist's own table, as a new user runs it: the
penguins CSV through `edgeloop data describe --write` (no hand edit of its
sections), `edgeloop up`, `run` and `loop`. A shift on one cohort's numbers (and
a share of its islands and sexes moved) is detected on the devices' reports, the
labelling team's raw rows of the table arrive, the automation retrains, the new
version is gated on raw rows against the champion on the same test rows, and
reaches every device of the cohort. Before, `edgeloop loop` on a table stopped
on a float cast of 'Torgersen', then on a second model name, then on the
reference's columns and the labelled rows' duplicates."""

from __future__ import annotations

import re

import pytest
from mlflow import MlflowClient
from palmerpenguins import load_penguins
from ruamel.yaml import YAML

from edge_fleet.client import FleetAdmin
from stack.contracts import Tag
from stack.net import free_port
from stack.secrets import stack_secrets
from stack.settings import Settings
from tests.conftest import FAST_OPTIMIZE, default_params_dict, make_project
from tests.flows.test_cli import edgeloop
from tests.flows.test_loop import PORTS

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

# The test's time only: a small fleet that reports often (`fleet:`,
# `monitoring:`); the table's sections are describe's, as written.
QUICK = {
    "fleet": {
        "poll_s": 0.5,
        "bake_s": 1.0,
        "canary_percent": 20,
        "waves": [50],
        "cohorts": ["north", "south"],
        "profile_mix": {"gateway": 1.0},
        "offline_after_s": 20,
    },
    "monitoring": {"device_window_reports": 40, "device_min_reports": 20},
}


def test_the_loop_closes_on_penguins_as_described(tmp_path):
    project = make_project(
        tmp_path / "project", default_params_dict(optimize=FAST_OPTIMIZE)
    )
    load_penguins().to_csv(tmp_path / "penguins.csv", index=False)
    env = {f"EDGELOOP_{name}_PORT": str(free_port()) for name in PORTS} | {
        "EDGELOOP_STATE_DIR": str(tmp_path / "state")
    }
    described = edgeloop(
        "data",
        "describe",
        str(tmp_path / "penguins.csv"),
        "--label",
        "species",
        "--write",
        cwd=project,
        env=env,
    )
    assert described.returncode == 0, described.stdout + described.stderr
    yaml = YAML()
    params = yaml.load(project / "params.yaml")
    assert params["registry"]["model_name"] == "edgeloop-penguins"
    for section, values in QUICK.items():
        params[section].update(values)
    yaml.dump(params, project / "params.yaml")
    try:
        for command in (("up",), ("run",)):
            out = edgeloop(*command, cwd=project, env=env, timeout=600)
            assert out.returncode == 0, out.stdout + out.stderr
        # The console: the steps and their results, once each (DVC's advice to
        # `git add dvc.lock` came twice per stage, ONNX's rewriters' lines ~150).
        console = out.stdout + out.stderr
        assert "git add dvc.lock" not in console and "onnxscript" not in console
        assert console.count("Running stage 'train'") == 1, console
        assert len(console.splitlines()) < 100, console
        # The cohort's accuracy on its delayed labels (raw rows of the table,
        # through each version's own encoding) rises with the retrained version.
        closed_loop(project, env, "shift 3 on cohort north")

        settings = Settings(
            state_dir=tmp_path / "state",
            mlflow_port=int(env["EDGELOOP_MLFLOW_PORT"]),
            fleet_port=int(env["EDGELOOP_FLEET_PORT"]),
        )
        client = MlflowClient(settings.tracking_uri)
        champion = client.get_model_version_by_alias("edgeloop-penguins", "champion")
        tags = champion.tags
        assert champion.version == "2" and tags[Tag.TRIGGER] == "drift"
        assert tags[Tag.GATE] == "passed"
        assert tags[Tag.PROMOTION].startswith("auto: champion, test accuracy ")
        assert tags[Tag.VS_CHAMPION].startswith("v1: ")  # paired, on raw rows
        fleet = FleetAdmin(
            settings.fleet_url, stack_secrets(settings)["fleet_admin_token"]
        )
        assert {d["current_version"] for d in fleet.devices("north")} == {"2"}
    finally:
        edgeloop("down", cwd=project, env=env)


def closed_loop(project, env: dict[str, str], drift: str, max_s: int = 420) -> str:
    """`edgeloop loop` on 8 devices: it closes, its report names `drift`, and the
    cohort's accuracy on its delayed labels rose with v2. Returns the report.
    `max_s`: the loop's wait for retraining and the rollout."""
    loop = edgeloop(
        "loop",
        "--devices",
        "8",
        "--max-s",
        str(max_s),
        cwd=project,
        env=env,
        timeout=max_s + 280,
    )
    report = loop.stdout
    assert loop.returncode == 0, report + loop.stderr
    assert "loop closed" in report and drift in report, report
    before, after = (
        float(x)
        for x in re.search(
            r"before v1 (\d\.\d+) on \d+ delayed labels; after v2 (\d\.\d+)",
            report,
        ).groups()
    )
    assert after > before, report
    return report
