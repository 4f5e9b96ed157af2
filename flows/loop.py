"""`edgeloop loop`: the closed loop on this machine, end to end, unattended.

1. the champion goes to a simulated fleet (canary -> waves -> full);
2. drift is injected on one cohort's inputs, and labelled rows of that shifted data
   arrive in `data/incoming/` (a labelling team, simulated: training rows with the
   same shift and their true labels);
3. the monitor flow checks drift until its trigger fires and emits the event;
4. the Prefect automation runs the `training_pipeline` deployment on the worker:
   a new data version, a new model, the same gates;
5. a new champion goes out through the webhook, the release flow and the fleet's
   rollout, until every device of the drifting cohort runs it.

It ends with a report: each step's time, the drift share before and after, the
versions, and where to look. Needs `edgeloop up` and a champion (`edgeloop run`)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from components.config import Params, load_params
from components.errors import ServiceError
from components.settings import Settings


@dataclass
class LoopReport:
    steps: list[tuple[str, float, str]] = field(default_factory=list)
    drift_before: float | None = None
    drift_after: float | None = None
    old_version: str | None = None
    new_version: str | None = None
    outcome: str = ""

    def step(self, name: str, started: float, detail: str) -> None:
        self.steps.append((name, time.monotonic() - started, detail))


def label_incoming(
    project: Path, params: Params, *, drift: str, strength: float, rows: int
) -> Path:
    """Labelled rows of the shifted data, as a labelling team would send them, into
    `paths.incoming`."""
    from edge_fleet.simulator import labelled_rows

    frame = labelled_rows(
        pd.read_parquet(project / params.paths.prepared / "train.parquet"),
        drift=drift,
        strength=strength,
        rows=rows,
        value_range=params.validation.feature_range,
    )
    folder = project / params.paths.incoming
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"labelled-{drift}-{int(time.time())}.parquet"
    frame.to_parquet(path, index=False)
    return path


def run_loop(  # noqa: PLR0913, PLR0915 - one story, top to bottom
    settings: Settings,
    project: Path,
    *,
    devices: int,
    cohort: str,
    drift: str,
    strength: float,
    label_rows: int,
    max_s: float,
    say=print,  # noqa: ANN001
) -> LoopReport:
    from mlflow import MlflowClient

    from edge_fleet.simulator import FleetSpec, run_fleet
    from flows.fleet_cli import _ensure_rollout, admin, stack_fleet
    from flows.monitor import monitor
    from flows.services import champion_version, evidently_workspace

    params = load_params(project / "params.yaml")
    if cohort not in params.fleet.cohorts:
        raise ServiceError(
            f"--cohort {cohort!r}: not one of fleet.cohorts {params.fleet.cohorts}"
        )
    report = LoopReport()
    champion = champion_version(settings, project / "params.yaml")
    if champion is None:
        raise ServiceError("no champion yet", hint="run `edgeloop run` first")
    report.old_version = champion
    fleet = admin(settings)
    client = MlflowClient(settings.tracking_uri)
    name = params.registry.model_name
    agents = stack_fleet(
        settings,
        params,
        FleetSpec(devices=devices, prefix=f"loop{int(time.time())}"),
        test_split=project / params.paths.prepared / "test.parquet",
        home=settings.state_dir / "fleet-sim" / "loop",
    )
    drifting = [a for a in agents if a.id.cohort == cohort]

    def fleet_for(seconds: float, done=lambda: False) -> None:  # noqa: ANN001
        asyncio.run(run_fleet(agents, params.fleet, done=done, max_s=seconds))

    def stable() -> str | None:
        return fleet.summary()["channels"].get("channel/stable", {}).get("version")

    # 1. The champion on the fleet.
    t0 = time.monotonic()
    for agent in agents:
        agent.step()
    _ensure_rollout(settings, name, champion)
    fleet_for(
        300,
        lambda: (
            stable() == champion
            and fleet.summary()["active_rollout"] is None
            and all(
                a.version == champion
                for a in agents
                if a.id.profile in _eligible(fleet)
            )
        ),
    )
    report.step("champion on the fleet", t0, f"v{champion} on {devices} devices")
    say(f"1. v{champion} on the fleet ({report.steps[-1][1]:.0f} s)")

    # 2. Drift on one cohort; labelled rows of it arrive.
    t0 = time.monotonic()
    for agent in drifting:
        agent.stream.drift, agent.stream.strength = drift, strength
    labels = label_incoming(
        project, params, drift=drift, strength=strength, rows=label_rows
    )
    per_s = max(len(drifting) / params.fleet.poll_s, 0.1)
    fill = params.monitoring.device_window_reports / per_s + 2 * params.fleet.poll_s
    injected_at = time.monotonic()
    fleet_for(fill)
    report.step(
        "drift injected",
        t0,
        f"{drift} {strength:g} on cohort {cohort} ({len(drifting)} devices); "
        f"{label_rows} labelled rows in {labels.relative_to(project)}",
    )
    say(f"2. {report.steps[-1][2]}")

    # 3. The monitor until its trigger fires (hysteresis: consecutive windows).
    t0 = time.monotonic()
    state_file = settings.state_dir / "monitor" / "loop-state.json"
    state_file.unlink(missing_ok=True)  # this demo's own trigger history
    target, fired = f"cohort-{cohort}", None
    for _ in range(params.monitoring.consecutive + 2):
        outcomes = monitor(
            str(project),
            workspace_dir=str(evidently_workspace(settings)),
            state_file=str(state_file),
            fleet_url=settings.fleet_url,
        )
        mine = next(o for o in outcomes if o["target"] == target)
        report.drift_before = report.drift_before or mine["drift_share"]
        say(
            f"3. monitor: {target} drift share {mine['drift_share']:.2f}: "
            f"{mine['decision']}"
        )
        if mine["trigger"]:
            fired = mine
            break
        fleet_for(params.fleet.poll_s * 3)
    if fired is None:
        report.outcome = "drift did not trigger retraining"
        return report
    report.step("drift detected", t0, f"event {fired.get('event_id')}")

    # 4.-5. The automation retrains on the worker; a new champion goes out.
    t0 = time.monotonic()

    def new_champion_everywhere() -> bool:
        current = champion_version(settings, project / "params.yaml")
        return (
            current is not None
            and current != champion
            and stable() == current
            and all(a.version == current for a in drifting)
        )

    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline and not new_champion_everywhere():
        fleet_for(10, new_champion_everywhere)
        latest = max(
            client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)
        )
        gate = latest.tags.get("edgeloop.gate")
        if latest.version != champion and gate and gate != "passed":
            report.new_version = latest.version
            report.outcome = (
                f"v{latest.version} retrained but failed the gates: "
                f"{latest.tags.get('edgeloop.gate_failures')}"
            )
            return report
    report.new_version = champion_version(settings, project / "params.yaml")
    if not new_champion_everywhere():
        report.outcome = f"no new champion on cohort {cohort} within {max_s:.0f} s"
        return report
    report.step(
        "retrained and rolled out",
        t0,
        f"v{report.new_version} on all {len(drifting)} devices of {cohort}",
    )
    latency = time.monotonic() - injected_at
    fleet_for(fill)
    outcomes = monitor(
        str(project),
        workspace_dir=str(evidently_workspace(settings)),
        state_file=str(state_file),
        fleet_url=settings.fleet_url,
    )
    report.drift_after = next(o for o in outcomes if o["target"] == target)[
        "drift_share"
    ]
    report.outcome = (
        f"loop closed: drift injected -> v{report.new_version} on every device of "
        f"{cohort} in {latency:.0f} s"
    )
    return report


def _eligible(fleet) -> set[str]:  # noqa: ANN001
    channel = fleet.summary()["channels"].get("channel/stable", {})
    return set(channel.get("profiles", []))


def fmt_share(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"
