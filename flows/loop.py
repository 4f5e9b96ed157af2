"""`edgeloop loop`: the closed loop on this machine, end to end, unattended.

1. the champion goes to a simulated fleet (canary -> waves -> full);
2. drift is injected on one cohort's inputs, and labelled rows of that shifted data
   arrive in `data/incoming/` (a labelling team, simulated: training rows with the
   same shift and their true labels);
3. the monitor flow checks drift until its trigger fires and emits the event;
4. the Prefect automation runs the `training_pipeline` deployment on the worker:
   a new data version, a new model, the same gates;
5. a new champion goes out through the webhook, the release flow and the fleet's
   rollout, until every device of the drifting cohort runs it (every one of a
   profile the file is deployable to; the others run what they ran).

It ends with a report: each step's time, the drift share before and after, the
versions, and where to look. Needs `edgeloop up` and a champion (`edgeloop run`)."""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from components.config import Params, load_params
from components.errors import ServiceError
from components.settings import Settings
from monitoring.reference import ChampionData, reference_rows


@dataclass
class LoopReport:
    steps: list[tuple[str, float, str]] = field(default_factory=list)
    cohort: str = ""
    drift_before: float | None = None
    drift_after: float | None = None
    accuracy_before: str | None = None  # old champion on the cohort's delayed labels
    accuracy_after: str | None = None  # new champion on the next batch of labels
    old_version: str | None = None
    new_version: str | None = None
    why: str = ""  # the new version's trigger and gate decision, from its tags
    outcome: str = ""

    def step(self, name: str, started: float, detail: str) -> None:
        self.steps.append((name, time.monotonic() - started, detail))


def label_incoming(  # noqa: PLR0913
    project: Path,
    params: Params,
    target: str,
    *,
    drift: str,
    strength: float,
    rows: int,
) -> Path:
    """Labelled rows of the shifted data, as a labelling team would send them, into
    `paths.incoming/<target>/`; each batch is a new draw (its seed in the name),
    reproducible: the seed follows from the target and how many batches it has."""
    from edge_fleet.simulator import labelled_rows

    folder = project / params.paths.incoming / target
    batches = len(list(folder.glob("labelled-*.parquet"))) if folder.exists() else 0
    seed = (zlib.crc32(target.encode()) + batches) % 2**31
    frame = labelled_rows(
        pd.read_parquet(project / params.paths.prepared / "train.parquet"),
        drift=drift,
        strength=strength,
        rows=rows,
        value_range=params.validation.feature_range,
        seed=seed,
    )
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = folder / f"labelled-{drift}-{stamp}-{seed}.parquet"
    frame.to_parquet(path, index=False)
    return path


def pick_cohort(
    project: Path, params: Params, cohort: str, champion: ChampionData | None
) -> str:
    """`auto`: the first cohort whose champion has none of its own labelled rows yet
    (its reference is still the training split, so a shift on it is drift)."""
    if cohort != "auto":
        if cohort not in params.fleet.cohorts:
            raise ServiceError(
                f"--cohort {cohort!r}: not one of fleet.cohorts {params.fleet.cohorts}"
            )
        return cohort
    for name in params.fleet.cohorts:
        if reference_rows(project, params, f"cohort-{name}", champion) is None:
            return name
    raise ServiceError(
        f"--cohort auto: every cohort of fleet.cohorts {params.fleet.cohorts} already "
        f"has its own labelled rows in v{champion.version if champion else '-'}'s "
        "data, so the same shift on it is no longer drift",
        hint=f"name one with --cohort, or move {params.paths.incoming}/cohort-*/ "
        "away to return to the embedded default data",
    )


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
    from flows.monitor import champion_data, monitor
    from flows.services import champion_version, evidently_workspace

    params = load_params(project / "params.yaml")
    report = LoopReport()
    champion = champion_version(settings, project / "params.yaml")
    if champion is None:
        raise ServiceError("no champion yet", hint="run `edgeloop run` first")
    name = params.registry.model_name
    cohort = pick_cohort(
        project, params, cohort, champion_data(settings.tracking_uri, name)
    )
    report.old_version, report.cohort = champion, cohort
    fleet = admin(settings)
    client = MlflowClient(settings.tracking_uri)
    agents = stack_fleet(
        settings,
        params,
        FleetSpec(devices=devices, prefix=f"loop{int(time.time())}"),
        test_split=project / params.paths.prepared / "test.parquet",
        home=settings.state_dir / "fleet-sim" / "loop",
    )
    drifting = [a for a in agents if a.id.cohort == cohort]
    target = f"cohort-{cohort}"
    state_file = settings.state_dir / "monitor" / "loop-state.json"
    state_file.unlink(missing_ok=True)  # this demo's own trigger history

    def fleet_for(seconds: float, done=lambda: False) -> None:  # noqa: ANN001
        asyncio.run(run_fleet(agents, params.fleet, done=done, max_s=seconds))

    def fleet_until(max_s: float, done) -> None:  # noqa: ANN001
        """Run the fleet until done(); a wait that runs out says what it awaited."""
        fleet_for(max_s, done)
        if not done():
            raise ServiceError(
                f"cohort {cohort}'s devices did not send the reports the loop waits "
                f"for within {max_s:.0f} s ({len(fleet.telemetry(cohort, 1000))} "
                "reports of it in all)",
                hint="see `edgeloop fleet status --devices`",
            )

    def stable() -> str | None:
        return fleet.summary()["channels"].get("channel/stable", {}).get("version")

    def check() -> dict:
        outcomes = monitor(
            str(project),
            workspace_dir=str(evidently_workspace(settings)),
            state_file=str(state_file),
            fleet_url=settings.fleet_url,
            tracking_uri=settings.tracking_uri,
        )
        return next(o for o in outcomes if o["target"] == target)

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

    # 2. Drift on one cohort; labelled rows of it arrive. The monitor's window (the
    #    cohort's last `device_window_reports` reports) is full of shifted reports
    #    before the first check: waited for, not assumed from the machine's speed.
    t0 = time.monotonic()
    window = params.monitoring.device_window_reports
    before = newest_report(fleet, cohort)
    for agent in drifting:
        agent.stream.drift, agent.stream.strength = drift, strength
    labels = label_incoming(
        project, params, target, drift=drift, strength=strength, rows=label_rows
    )
    running = [a for a in drifting if a.version is not None]  # those that report
    per_s = max(len(running) / params.fleet.poll_s, 0.1)
    # What filling the window should take, with room for a slow machine.
    fill_s = 5 * (window / per_s + 2 * params.fleet.poll_s) + 30
    injected_at = time.monotonic()
    fleet_until(fill_s, lambda: reported_since(fleet, cohort, before, window))
    report.step(
        "drift injected",
        t0,
        f"{drift} {strength:g} on cohort {cohort} ({len(drifting)} devices, "
        f"{len(running)} running a model); "
        f"{label_rows} labelled rows in {labels.relative_to(project)}",
    )
    say(f"2. {report.steps[-1][2]}")

    # 3. The monitor until its trigger fires (hysteresis: consecutive windows).
    t0 = time.monotonic()
    fired = None
    for _ in range(params.monitoring.consecutive + 2):
        checked = newest_report(fleet, cohort)
        mine = check()
        report.drift_before = report.drift_before or mine["drift_share"]
        report.accuracy_before = report.accuracy_before or _accuracy(mine, champion)
        say(
            f"3. monitor: {target} drift share {mine['drift_share']:.2f}: "
            f"{mine['decision']}"
        )
        if mine["trigger"]:
            fired = mine
            break
        # The next window: each running device of the cohort reported again.
        fleet_until(
            fill_s, lambda: reported_since(fleet, cohort, checked, len(running))
        )
    if fired is None:
        report.outcome = (
            f"drift on {target} did not trigger retraining (against "
            f"{mine['reference']})"
        )
        return report
    report.step("drift detected", t0, f"event {fired.get('event_id')}")

    # 4.-5. The automation retrains on the worker; a new champion goes out.
    t0 = time.monotonic()

    def eligible_drifting() -> list:
        """The cohort's devices of a profile the stable file is deployable to (the
        others keep what they run)."""
        profiles = _eligible(fleet)
        return [a for a in drifting if a.id.profile in profiles]

    def new_champion_everywhere() -> bool:
        current = champion_version(settings, project / "params.yaml")
        return (
            current is not None
            and current != champion
            and stable() == current
            and all(a.version == current for a in eligible_drifting())
        )

    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline and not new_champion_everywhere():
        fleet_for(10, new_champion_everywhere)
        latest = max(
            client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)
        )
        stopped = [
            r
            for r in fleet.rollouts()
            if r["version"] == latest.version
            and r["state"] in ("rolled_back", "aborted")
        ]
        if latest.version != champion and stopped:
            report.new_version = latest.version
            report.outcome = (
                f"v{latest.version}'s rollout was {stopped[-1]['state']}: "
                f"{stopped[-1]['cause']}"
            )
            return report
        gate = latest.tags.get("edgeloop.gate")
        if latest.version != champion and gate and gate != "passed":
            report.new_version = latest.version
            report.why = why(latest.tags)
            report.outcome = (
                f"v{latest.version} retrained but failed the gates: "
                f"{latest.tags.get('edgeloop.gate_failures')}"
            )
            return report
    report.new_version = champion_version(settings, project / "params.yaml")
    if not new_champion_everywhere():
        report.outcome = f"no new champion on cohort {cohort} within {max_s:.0f} s"
        return report
    report.why = why(client.get_model_version(name, report.new_version).tags)
    report.step(
        "retrained and rolled out",
        t0,
        f"v{report.new_version} on all {len(eligible_drifting())} devices of "
        f"{cohort} its file is deployable to ({len(drifting)} in the cohort)",
    )
    latency = time.monotonic() - injected_at

    # 6. After: the cohort against the new champion's reference, and its accuracy
    #    on the next labelled batch (the labelling team keeps labelling).
    t0 = time.monotonic()
    later = label_incoming(
        project,
        params,
        target,
        drift=drift,
        strength=strength,
        rows=max(label_rows // 2, params.monitoring.delayed_labels_min_rows),
    )
    # A window of the cohort's reports from the new version only.
    since = newest_report(fleet, cohort)
    fleet_until(
        fill_s,
        lambda: reported_since(
            fleet, cohort, since, window, version=report.new_version
        ),
    )
    after = check()
    report.drift_after = after["drift_share"]
    report.accuracy_after = _accuracy(after, report.new_version)
    report.step(
        "after",
        t0,
        f"{target} against {after['reference']}; next labels in "
        f"{later.relative_to(project)}",
    )
    report.outcome = (
        f"loop closed: drift injected -> v{report.new_version} on every device of "
        f"{cohort} in {latency:.0f} s"
    )
    return report


def newest_report(fleet, cohort: str) -> datetime | None:  # noqa: ANN001
    """When the fleet server received the cohort's newest report (its clock)."""
    latest = fleet.telemetry(cohort, 1)
    return datetime.fromisoformat(latest[0]["received_at"]) if latest else None


def reported_since(
    fleet,  # noqa: ANN001
    cohort: str,
    after: datetime | None,
    count: int,
    *,
    version: str | None = None,
) -> bool:
    """Whether the cohort's newest `count` reports all arrived after `after` (and
    come from `version`, when given)."""
    newest = fleet.telemetry(cohort, count)
    return len(newest) >= count and all(
        (after is None or datetime.fromisoformat(r["received_at"]) > after)
        and (version is None or r["version"] == version)
        for r in newest
    )


def why(tags: dict[str, str]) -> str:
    """What started a version's training and what its gates said (its tags)."""
    trigger = tags.get("edgeloop.trigger", "manual")
    if trigger == "drift":
        started = (
            f"drift on {tags.get('edgeloop.trigger.target')} (share "
            f"{tags.get('edgeloop.trigger.drift_share')}, event "
            f"{tags.get('edgeloop.trigger.event_id')}, Evidently snapshot "
            f"{tags.get('edgeloop.trigger.snapshot_id')})"
        )
    else:
        started = trigger
    gate = tags.get("edgeloop.gate", "not gated")
    if gate != "passed" and tags.get("edgeloop.gate_failures"):
        gate += f": {tags['edgeloop.gate_failures']}"
    return f"trained for {started}; gates {gate}"


def _accuracy(outcome: dict, version: str | None) -> str | None:
    if "accuracy_delayed" not in outcome:
        return None
    return (
        f"v{version} {outcome['accuracy_delayed']:.3f} on "
        f"{outcome['delayed_label_rows']} delayed labels"
    )


def _eligible(fleet) -> set[str]:  # noqa: ANN001
    channel = fleet.summary()["channels"].get("channel/stable", {})
    return set(channel.get("profiles", []))


def fmt_share(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"
