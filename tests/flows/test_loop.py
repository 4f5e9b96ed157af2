"""The closed loop, end to end, as `make run` runs it (`edgeloop up`, `edgeloop run`,
`edgeloop loop`) on a scratch project and a small fleet: drift on one cohort is
detected, the drift automation retrains on the worker, the new version passes the
gates and reaches every device of that cohort; the version's tags link it to the
drift event; the running Evidently UI's dashboard series show the spike and the
recovery; the old champion's accuracy on the cohort's delayed labels is measured."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from sklearn.datasets import load_digits

from edge_fleet.client import FleetAdmin
from edge_fleet.controller import ACTIVE
from flows.adapters import registry
from stack.contracts import Tag
from stack.mlflow_auth import ensure_user
from stack.net import free_port
from stack.secrets import gate_key, stack_secrets
from stack.settings import Settings
from stack.supervisor import ensure_serving, serving_answers
from tests.browser import SCREENSHOTS, chromium, require_chromium
from tests.conftest import (
    BIN,
    project_of,
)
from tests.flows.test_cli import edgeloop
from tests.waits import poll

# The module's stack (up, run, the loop) is set up inside its first test's limit.
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1200)]

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


@dataclass(frozen=True)
class Stack:
    project: Path
    env: dict[str, str]
    loop_stdout: str

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.env[f'EDGELOOP_{service}_PORT']}"

    @property
    def settings(self) -> Settings:
        return Settings(
            state_dir=Path(self.env["EDGELOOP_STATE_DIR"]),
            mlflow_port=int(self.env["EDGELOOP_MLFLOW_PORT"]),
            fleet_port=int(self.env["EDGELOOP_FLEET_PORT"]),
            serving_port=int(self.env["EDGELOOP_SERVING_PORT"]),
        )

    @property
    def fleet(self) -> FleetAdmin:
        settings = self.settings
        return FleetAdmin(
            settings.fleet_url, stack_secrets(settings)["fleet_admin_token"]
        )


@pytest.fixture(scope="module")
def stack(champion, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`edgeloop up`, `edgeloop run`, `edgeloop loop` on a copy of the session's
    champion project, once for this module's tests; `edgeloop down` after. The copy
    holds the trained model in its DVC cache: `edgeloop run` skips every stage and
    registers it in this stack's own registry; the loop's retraining is real."""
    tmp_path = tmp_path_factory.mktemp("loop")
    gates = yaml.safe_load((champion.project / "params.yaml").read_text())["registry"][
        "gates"
    ]
    project = project_of(
        champion,
        tmp_path,
        # The retrain's test split holds the cohort's noisy rows (400 labelled
        # here, 600 in `make run`): 0.9485 was seen against the default 0.95. The
        # loop is under test here, not that threshold.
        registry={
            "model_name": "it-loop",
            "gates": gates | {"min_test_accuracy": 0.9, "max_drop_vs_champion": 0.05},
        },
        fleet={
            "poll_s": 0.5,
            "bake_s": 1.0,
            "canary_percent": 20,
            "waves": [50],
            "cohorts": ["north", "south"],
            # mcu devices cannot take the int8 file: they keep what they run
            "profile_mix": {"gateway": 0.7, "mcu": 0.3},
            # the loop's devices stop with it: out of stage health soon after
            "offline_after_s": 20,
        },
        monitoring={
            "device_window_reports": 40,
            "device_min_reports": 20,
            "reference_batches": 150,
        },
    )
    env = {f"EDGELOOP_{name}_PORT": str(free_port()) for name in PORTS} | {
        "EDGELOOP_STATE_DIR": str(tmp_path / "state")
    }
    try:
        for command in (("up",), ("run",)):
            out = edgeloop(*command, cwd=project, env=env, timeout=600)
            assert out.returncode == 0, out.stdout + out.stderr
        assert "unchanged (DVC cache)" in out.stdout, out.stdout  # nothing retrained
        # What serving answers with, as the service says it.
        assert re.search(
            r"serving: +http://\S+/predict answers it-loop v1\b", out.stdout
        )
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
        yield Stack(project, env, loop.stdout)
    finally:
        edgeloop("down", cwd=project, env=env)


def test_the_loop_closes_on_a_small_fleet(stack: Stack):
    assert "loop closed" in stack.loop_stdout
    # The link the loop ends with opens the fleet console (after its login).
    console = re.search(r"fleet console (http://\S+/ui/)", stack.loop_stdout)
    assert console, stack.loop_stdout[-2000:]
    login = httpx.get(console.group(1), timeout=30, follow_redirects=True)
    assert login.status_code == 200 and 'name="token"' in login.text, login.text
    cohort = re.search(r"drift share of cohort-(\w+)", stack.loop_stdout).group(1)
    assert cohort == "north"  # auto: the first cohort that never drifted

    # The new version runs on every device of the drifting cohort.
    client = MlflowClient(stack.url("MLFLOW"))
    champion = client.get_model_version_by_alias("it-loop", "champion")
    assert champion.version != "1"
    fleet = stack.fleet
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
    assert tags["edgeloop.trigger.snapshot_id"] and tags["edgeloop.gate"] == "passed"
    assert tags["edgeloop.trigger.event_id"] in stack.loop_stdout

    # The fleet's ledger: a gateway of the drifted cohort, from its new version
    # back to the drift event and the data version (`edgeloop fleet explain`).
    gateway = next(d["id"] for d in devices if d["profile"] == "gateway")
    out = edgeloop("fleet", "explain", gateway, cwd=stack.project, env=stack.env)
    assert out.returncode == 0, out.stderr
    for said in (
        f"ran v{champion.version}",
        f"training run {champion.run_id}",
        f"started by drift on cohort-{cohort}",
        tags["edgeloop.trigger.event_id"],
        f"prepared {tags['edgeloop.prepared_data_md5']} (DVC)",
    ):
        assert said in out.stdout, out.stdout
    # The monitor told the fleet each pass: the console's cohort trend.
    checks = fleet.cohort_checks(cohort)
    assert any(c["trigger"] for c in checks), checks

    # The Evidently UI: the cohort's drift share spikes, then recovers against
    # the new champion's reference; the old champion's accuracy on the delayed
    # labels is on the same dashboard.
    evidently = stack.url("EVIDENTLY")
    # Reads are open; a write without the stack's secret is refused (on main,
    # POST /api/projects was 201 and DELETE 204 for anyone on loopback).
    made = httpx.post(
        f"{evidently}/api/projects", json={"name": "x", "description": ""}, timeout=30
    )
    assert made.status_code == 403, made.text
    some = httpx.get(f"{evidently}/api/projects", timeout=30).json()[0]["id"]
    gone = httpx.delete(f"{evidently}/api/projects/{some}", timeout=30)
    assert gone.status_code == 403, gone.text
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


def _challenger(client: MlflowClient, name: str) -> str:
    """A new version of the champion's model (its run, its files, its measured tags
    and gate decision) marked `challenger`, as a manual-promotion pipeline leaves
    it: what a data scientist then reviews and promotes in the UI."""
    champion = client.get_model_version_by_alias(name, "champion")
    version = client.create_model_version(
        name,
        champion.source,
        champion.run_id,
        # MLflow 3: a logged model's version has source models:/<model id>; the
        # version read back does not carry model_id itself.
        model_id=champion.model_id or champion.source.removeprefix("models:/"),
        tags={k: v for k, v in champion.tags.items() if k.startswith("edgeloop.")}
        | {"edgeloop.trigger": "manual"},
        description="challenger for the browser test",
    )
    # Sealed as the gates would (the same file, passed), with the stack's key.
    registry.seal_decision(client, name, version.version, True, gate_key(Settings()))
    client.set_registered_model_alias(name, "challenger", version.version)
    return str(version.version)


def promote_in_ui(
    mlflow: str, name: str, challenger: str, before: str, who: tuple[str, str]
) -> Path:
    """What a data scientist (`who`: user and password, EDIT on the model) does in
    the MLflow UI: log in, open the model, the pencil by the challenger's aliases,
    type `champion`, Enter, "Save aliases". Returns the screenshot of the model
    page after the change."""
    from playwright.sync_api import expect

    shot = SCREENSHOTS / "mlflow-model-page.png"
    with chromium() as browser:
        login = {"username": who[0], "password": who[1]}
        context = browser.new_context(
            http_credentials=login, viewport={"width": 1400, "height": 900}
        )
        page = context.new_page()
        page.goto(f"{mlflow}/#/models/{name}")
        row = page.get_by_role("row").filter(has_text="@ challenger")
        expect(row).to_have_count(1, timeout=60_000)
        expect(row).to_contain_text(f"Version {challenger}")
        row.get_by_role("button").last.click()  # edit aliases
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text(f"Add/Edit alias for model version {challenger}")
        dialog.get_by_role("combobox").fill("champion")
        dialog.get_by_role("combobox").press("Enter")
        expect(dialog).to_contain_text(f"also being used on version {before}")
        dialog.get_by_role("button", name="Save aliases").click()
        expect(dialog).to_have_count(0)
        page.reload()
        promoted = page.get_by_role("row").filter(has_text="@ champion")
        expect(promoted).to_contain_text(f"Version {challenger}", timeout=30_000)
        page.screenshot(path=str(shot), full_page=True)
    return shot


def running_devices(stack: Stack, champion: str) -> subprocess.Popen:
    """`edgeloop fleet simulate` in the background: 6 new devices that take the
    champion and then keep checking in (bounded: --run-s)."""
    log = (stack.project / "simulate-ui.log").open("w")
    devices = subprocess.Popen(
        [str(BIN / "edgeloop"), "fleet", "simulate", "--devices", "6"]
        + ["--prefix", "ui", "--max-s", "120", "--run-s", "240"],
        cwd=stack.project,
        env=os.environ | stack.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    on_champion = poll(
        lambda: [
            d
            for d in stack.fleet.devices()
            if d["id"].startswith("ui") and d["current_version"] == champion
        ],
        lambda found: len(found) >= 3 or devices.poll() is not None,
        150,
    )
    assert len(on_champion) >= 3, (stack.project / "simulate-ui.log").read_text()
    return devices


def test_promotion_in_the_mlflow_ui_reaches_serving_and_the_fleet(stack: Stack):
    require_chromium()
    name, mlflow = "it-loop", stack.url("MLFLOW")
    client = MlflowClient(mlflow)
    before = client.get_model_version_by_alias(name, "champion").version
    # Devices online on the champion first, so the canary has someone to go to
    # (of the 6, gateway ui-00002 falls in the 20% canary: buckets are by device id).
    devices = running_devices(stack, before)
    try:
        challenger = _challenger(client, name)
        who = ("ds-ui", "ds-password-1234")
        ensure_user(stack.settings, *who, models={name: "EDIT"})
        shot = promote_in_ui(mlflow, name, challenger, before, who)
        assert shot.stat().st_size > 10_000  # the page, kept as the test's artifact
        champion = client.get_model_version_by_alias(name, "champion").version
        assert champion == challenger

        # The registry's webhook reached the stack: the release flow recorded the
        # change as the UI's (not the stack's own) and told serving to switch.
        changes = poll(
            lambda: [
                (c.from_version, c.who)
                for c in registry.history(client, name)
                if c.alias == "champion" and c.to_version == challenger
            ],
            bool,
            120,
        )
        assert changes == [(before, "registry (webhook)")]
        digit = load_digits().data[:1].tolist()
        answer = poll(
            lambda: httpx.post(
                f"{stack.url('SERVING')}/predict", json={"instances": digit}, timeout=30
            ),
            lambda a: (
                a.status_code == 200 and a.json()[0]["model_version"] == challenger
            ),
            60,
        )
        assert answer.json()[0]["model_version"] == challenger, answer.text

        # The fleet: the release flow started the rollout; the running devices'
        # canary took the new version first, then the rest.
        rollouts = poll(
            lambda: [r for r in stack.fleet.rollouts() if r["version"] == challenger],
            lambda found: bool(found) and found[0]["state"] not in ACTIVE,
            200,
        )
    finally:
        devices.terminate()
        devices.wait(timeout=60)
    assert rollouts, "no rollout of the promoted version"
    rollout = rollouts[0]
    assert rollout["reason"] == "champion changed"
    assert rollout["state"] == "completed", (
        rollout["cause"],
        rollout["events"],
        (stack.project / "simulate-ui.log").read_text()[-3000:],
    )
    [canary] = [
        e
        for e in rollout["events"]
        if (e["event"], e.get("stage")) == ("stage_passed", "canary")
    ]
    assert canary["installed"] >= 1, rollout["events"]
    gateways = [
        d
        for d in stack.fleet.devices()
        if d["id"].startswith("ui") and d["profile"] == "gateway"
    ]
    assert gateways and {d["current_version"] for d in gateways} == {challenger}


def test_serving_follows_the_model_its_params_name(stack: Stack):
    """params.yaml switched to another registered model: `edgeloop run`'s serving
    step (ensure_serving) restarts serving, which then answers with that model, and
    says so; it does not claim a model it does not serve."""
    client = MlflowClient(stack.url("MLFLOW"))
    source = client.get_model_version_by_alias("it-loop", "champion")
    if not client.search_registered_models("name = 'it-loop-b'"):
        client.create_registered_model("it-loop-b")
    other = client.create_model_version(
        "it-loop-b",
        source.source,
        source.run_id,
        tags=source.tags,
        model_id=source.model_id or source.source.removeprefix("models:/"),
    ).version
    # Its seal names it-loop's version: sealed for it-loop-b, as the gates would
    # (serving loads only a version with its own seal).
    registry.seal_decision(client, "it-loop-b", other, True, gate_key(stack.settings))
    client.set_registered_model_alias("it-loop-b", "champion", other)
    params = stack.project / "params.yaml"
    text = params.read_text()
    settings = stack.settings
    try:
        assert serving_answers(settings.serving_url)[0] == "it-loop"
        params.write_text(text.replace("model_name: it-loop", "model_name: it-loop-b"))
        serving = ensure_serving(settings, params)
        assert serving is not None
        assert (serving.model_name, serving.model_version) == ("it-loop-b", other)
        digit = load_digits().data[:1].tolist()
        answer = httpx.post(
            f"{settings.serving_url}/predict", json={"instances": digit}, timeout=30
        )
        assert answer.status_code == 200 and answer.json()[0]["model_version"] == other
    finally:
        params.write_text(text)


def test_the_state_backs_up_while_running_and_restores_elsewhere(
    stack: Stack, tmp_path: Path
):
    """`edgeloop state backup` of the running stack, `restore` refused while it
    runs, restored in another folder: MLflow's own store reads the champion, its
    seal and its files there, and the fleet's stored model files are found
    relative to the new folder (they were absolute paths to the old one)."""
    live = MlflowClient(stack.url("MLFLOW")).get_model_version_by_alias(
        "it-loop", "champion"
    )
    folder = str(tmp_path / "backup")
    made = edgeloop("state", "backup", folder, cwd=stack.project, env=stack.env)
    assert made.returncode == 0 and "backed up" in made.stdout, made.stderr
    refused = edgeloop(
        "state", "restore", folder, "--force", cwd=stack.project, env=stack.env
    )
    assert refused.returncode == 1 and "is running" in refused.stderr, refused.stderr
    restored = tmp_path / "restored"
    elsewhere = stack.env | {"EDGELOOP_STATE_DIR": str(restored)}
    out = edgeloop("state", "restore", folder, cwd=stack.project, env=elsewhere)
    assert out.returncode == 0, out.stderr

    store = SqlAlchemyStore(f"sqlite:///{restored / 'mlflow' / 'mlflow.db'}")
    version = store.get_model_version_by_alias("it-loop", "champion")
    assert (str(version.version), version.tags) == (live.version, live.tags)
    ship_file = live.tags[Tag.SHIP_FILE]  # the file devices get
    shipped = (restored / "mlflow" / "artifacts").glob(
        f"*/{live.run_id}/artifacts/{ship_file}"
    )
    assert [p for p in shipped if p.stat().st_size > 0], ship_file
    with sqlite3.connect(restored / "fleet" / "fleet.db") as db:
        blobs = [b for (b,) in db.execute("SELECT blob FROM models")]
    assert blobs, "the fleet has models"
    for blob in blobs:
        assert not Path(blob).is_absolute(), blob
        assert (restored / "fleet" / blob).is_file(), blob
